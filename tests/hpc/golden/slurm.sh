#!/bin/bash
#SBATCH --job-name=relax-si
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
#SBATCH --no-requeue
#SBATCH --mem=8192M
#SBATCH --partition=batch
#SBATCH --account=mat123
#SBATCH --output=job.out
#SBATCH --error=job.err
#SBATCH --chdir=/scratch/run1

# Batch script for slurm, rendered by matdx.hpc.
cd -- /scratch/run1 || exit 1
module load quantum-espresso/6.7 || exit
export OMP_NUM_THREADS=2
export ESPRESSO_TMPDIR='/scratch/$USER/tmp'
echo start || exit
matdx_main() {
    mpirun pw.x -in pw.in || return
}
matdx_main
matdx_status=$?
echo done
exit "$matdx_status"
