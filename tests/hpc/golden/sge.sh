#!/bin/bash
#$ -N relax-si
#$ -S /bin/bash
#$ -l h_rt=02:00:00
#$ -V
#$ -pe mpi 16
#$ -l h_vmem=1024M
#$ -q batch
#$ -A mat123
#$ -o job.out
#$ -e job.err
#$ -wd /scratch/run1

# Batch script for sge, rendered by matdx.hpc.
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
