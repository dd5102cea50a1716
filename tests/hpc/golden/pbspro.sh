#!/bin/bash
#PBS -N relax-si
#PBS -l select=2:ncpus=8:mpiprocs=4:ompthreads=2:mem=8192mb
#PBS -l place=scatter
#PBS -l walltime=02:00:00
#PBS -q batch
#PBS -A mat123
#PBS -o job.out
#PBS -e job.err

# Batch script for pbspro, rendered by matdx.hpc.
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
