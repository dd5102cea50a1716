#!/bin/bash
#BSUB -J relax-si
#BSUB -n 16
#BSUB -R span[ptile=8]
#BSUB -W 2:00
#BSUB -R rusage[mem=8192MB]
#BSUB -M 8192MB
#BSUB -q batch
#BSUB -P mat123
#BSUB -o job.out
#BSUB -e job.err
#BSUB -cwd /scratch/run1

# Batch script for lsf, rendered by matdx.hpc.
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
