"""No campaign-file string reaches a generated input file unchecked (matdx.safety.text).

Each case is a user value that would add or change a line of a LAMMPS, Quantum ESPRESSO,
CP2K or VASP input; the template refuses it before writing anything, naming the field.
"""

from __future__ import annotations

import pytest
from ase.build import bulk, molecule

from matdx.codes.cp2k import Cp2kTemplate
from matdx.codes.errors import InputError
from matdx.codes.espresso import EspressoTemplate
from matdx.codes.lammps import LammpsTemplate
from matdx.codes.vasp import VaspTemplate

CU = {"pair_style": "eam", "pair_coeff": ["* * Cu_u3.eam"]}
SI = {"system": {"ecutwfc": 20.0}, "kpoints": {"grid": [2, 2, 2]}}


def water():
    atoms = molecule("H2O")
    atoms.cell = [6.0, 6.0, 6.0]
    atoms.center()
    return atoms


CASES = [
    # LAMMPS: a newline in pair_style used to become a `shell` command in in.lammps
    (LammpsTemplate, bulk("Cu"), {**CU, "pair_style": "eam\nshell touch /tmp/owned"},
     "parameters.pair_style: contains a line break"),
    (LammpsTemplate, bulk("Cu"), {**CU, "pair_style": "eam & "}, "token '&'"),
    (LammpsTemplate, bulk("Cu"), {**CU, "pair_coeff": ["* * Cu_u3.eam $(v_x)"]},
     "parameters.pair_coeff[0]: token '$(v_x)'"),
    (LammpsTemplate, bulk("Cu"), {**CU, "specorder": ["Cu\r"]}, "specorder[0]"),
    (LammpsTemplate, bulk("Cu"), {**CU, "relax": {"min_style": "cg\x1b[2J"}},
     "relax.min_style: contains a control character"),
    # Quantum ESPRESSO namelists: names and values
    (EspressoTemplate, bulk("Si"), {**SI, "control": {"prefix": "si'\n/\n&system x=1"}},
     "parameters.control.prefix: contains a line break"),
    (EspressoTemplate, bulk("Si"), {**SI, "electrons": {"conv_thr = 1, startingwfc": "x"}},
     "parameters.electrons: key 'conv_thr = 1, startingwfc' is not one word"),
    (EspressoTemplate, bulk("Si"), {**SI, "pseudopotentials": {"Si": "../Si.UPF\n"}},
     "parameters.pseudopotentials"),
    # CP2K raw sections
    (Cp2kTemplate, water(), {"input": {"GLOBAL": {"PRINT_LEVEL": "LOW\n&END GLOBAL"}}},
     "parameters.input.GLOBAL.PRINT_LEVEL: contains a line break"),
    (Cp2kTemplate, water(), {"input": {"GLOBAL": {"@INCLUDE /etc/passwd": ""}}},
     "key '@INCLUDE /etc/passwd' is not one word"),
    (Cp2kTemplate, water(), {"xc": "PBE\x00"}, "parameters.xc: contains a control character"),
    # VASP INCAR: ";" puts a second tag on the line
    (VaspTemplate, bulk("Si"), {"incar": {"ALGO": "Fast; NELM = 1"}},
     "parameters.incar.ALGO: 'Fast; NELM = 1' contains ';'"),
    (VaspTemplate, bulk("Si"), {"incar": {"ALGO\nNELM": 1}}, "parameters.incar"),
    (VaspTemplate, bulk("Si"), {"potcar": {"Si": "Si\nPAW"}}, "parameters.potcar.Si"),
    (VaspTemplate, bulk("Si"), {"kpoints": {"file": "not a KPOINTS"}}, "kpoints.file"),
]


@pytest.mark.parametrize(("cls", "atoms", "parameters", "message"), CASES)
def test_unsafe_user_text_is_refused_before_anything_is_written(cls, atoms, parameters,
                                                                message, tmp_path):
    calculation = "static"
    with pytest.raises(InputError) as info:
        cls().write_input(tmp_path, atoms, parameters, calculation)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_allow_listed_lammps_tokens_still_write(tmp_path):
    parameters = {**CU, "pair_coeff": "* * Cu_u3.eam", "specorder": ["Cu"],
                  "relax": {"min_style": "fire"}}
    LammpsTemplate().write_input(tmp_path, bulk("Cu"), parameters, "relax")
    text = (tmp_path / "in.lammps").read_text()
    assert "pair_style eam\npair_coeff * * potentials/Cu_u3.eam" in text
    assert "shell" not in text


def test_a_vasp_kpoints_file_from_a_correction_is_rewritten_from_its_parse(tmp_path):
    text = "Automatic kpoint scheme\n0\nGamma\n4 4 4\n"
    VaspTemplate().write_input(tmp_path, bulk("Si"), {"kpoints": {"file": text}}, "static")
    assert (tmp_path / "KPOINTS").read_text().splitlines()[2:4] == ["Gamma", "4 4 4"]
