"""matdx.safety: checks on user-supplied text before it reaches a file another program parses.

Input files (QE namelists, ``in.lammps``, CP2K sections, INCAR) and batch scripts
(``#SBATCH``, ``#$``, ``#PBS``, ``#BSUB`` directives) are read line by line by programs and
schedulers that matdx does not control: a newline inside a value starts a new command or
directive. Every subsystem that writes such a file from user values checks them with
:mod:`matdx.safety.text`. This package is a leaf: it imports nothing else of matdx.
"""
