"""Campaign files: what they accept, and every kind of bad input rejected with its field."""

from pathlib import Path

import pytest

from matdx.workflows.campaign import CampaignError, plan_campaign, read_campaign

DATA = Path(__file__).parent / "data"


def plan(text_or_data, base=DATA):
    campaign = read_campaign(text_or_data)
    return plan_campaign(campaign, base)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def test_single_study_at_top_level_with_generated_and_file_structures():
    graph = plan(
        {
            "name": "mixed",
            "recipe": "static",
            "structures": [
                {"bulk": ["Cu", "Al"], "cubic": True},
                {"file": "Cu.cif"},
                {"file": "Al.poscar", "repeat": [2, 1, 1]},
                {"file": "NiCu.extxyz", "index": ":"},
            ],
        }
    )
    formulas = [
        next(iter(flow.jobs)).inputs["kwargs"]["atoms"]["@atoms"]["numbers"]
        for _, flow in graph.workflows
    ]
    assert [len(n) for n in formulas] == [4, 4, 4, 2, 2, 2]
    assert graph.executor == {"type": "local", "workers": None}


def test_sweep_makes_one_workflow_per_value():
    graph = plan(
        {
            "name": "sweep",
            "studies": [
                {
                    "recipe": "md",
                    "structures": [{"bulk": ["Cu"], "cubic": True}],
                    "settings": {"steps": 100},
                    "sweep": {"temperature_K": [300, 600, 900]},
                }
            ],
        }
    )
    assert [flow.name for _, flow in graph.workflows] == [
        "md Cu4 300 K",
        "md Cu4 600 K",
        "md Cu4 900 K",
    ]
    assert all(len(flow) == 2 for _, flow in graph.workflows)


def test_retries_apply_to_every_job():
    graph = plan({"name": "r", "retries": 0, "recipe": "eos", "structures": [{"bulk": ["Cu"]}]})
    assert {j.retries for _, flow in graph.workflows for j in flow.jobs} == {0}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "x", "recipe": "phonons", "structures": [{"bulk": ["Cu"]}]},
            r"studies\[0\]\.recipe: unknown recipe 'phonons'; available: "
            r"bands, elastic, eos, md, phonon, relax, static",
        ),
        (
            {"name": "x", "recipe": "static", "structures": [{"bulk": ["Cu", "Xq"]}]},
            r"studies\[0\]\.structures\[0\]\.bulk\[1\]: unknown element 'Xq'",
        ),
        (
            {"name": "x", "recipe": "static", "structures": [{"file": "overlap.extxyz"}]},
            r"studies\[0\]\.structures\[0\]\.file: overlap\.extxyz: "
            r"atoms 0 \(Cu\) and 1 \(Cu\) overlap: 0\.224 Å apart",
        ),
        (
            {
                "name": "x",
                "recipe": "md",
                "structures": [{"bulk": ["Cu"]}],
                "settings": {"temperature_K": -5},
            },
            r"studies\[0\]\.settings\.temperature_K: must be greater than 0 K; got -5",
        ),
        (
            {
                "name": "x",
                "recipe": "md",
                "structures": [{"bulk": ["Cu"]}],
                "sweep": {"temperature_K": [300, -1]},
            },
            r"studies\[0\]\.sweep\.temperature_K\[1\]: must be greater than 0 K; got -1",
        ),
        (
            {"name": "x", "recipe": "static", "structures": [{"file": "missing.cif"}]},
            r"studies\[0\]\.structures\[0\]\.file: no such file '.*missing\.cif'",
        ),
        (
            {"name": "x", "recipe": "static", "structures": [{"bulk": ["Si"]}]},
            r"studies\[0\]\.structures\[0\]: code: emt has no parameters for Si",
        ),
        (
            {"name": "x", "recipe": "static", "code": "castep", "structures": [{"bulk": ["Cu"]}]},
            r"studies\[0\]\.structures\[0\]: code: unknown code 'castep'",
        ),
        (
            {"name": "x", "recipe": "static", "code": "vasp", "structures": [{"bulk": ["Cu"]}]},
            r"code: vasp needs the program 'vasp_std', which is not installed here",
        ),
        (
            {"name": "x", "recipe": "md", "code": "espresso", "structures": [{"bulk": ["Si"]}]},
            r"code: espresso cannot run the 'md' recipe",
        ),
        (
            {"name": "x", "recipe": "static", "code": "espresso",
             "structures": [{"bulk": ["Zr"]}]},
            r"studies\[0\]\.structures\[0\]: parameters: .*Zr",
        ),
        (
            {"name": "x", "recipe": "eos", "code": "cp2k", "structures": [{"bulk": ["Si"]}]},
            r"relax_first: cp2k cannot relax the cell; set relax_first: false",
        ),
        (
            {"name": "x", "recipe": ["relax", "md"], "structures": [{"bulk": ["Cu"]}],
             "settings": {"relax": {"fmax": 0.05}, "eos": {"points": 9}}},
            r"studies\[0\]\.settings\.eos: not a recipe of this chain",
        ),
        (
            {"name": "x", "recipe": ["md", "relax"], "structures": [{"bulk": ["Cu"]}]},
            r"studies\[0\]\.recipe: 'md' returns no single structure",
        ),
        (
            {"name": "x", "recipe": "static", "protocol": "sloppy",
             "structures": [{"bulk": ["Cu"]}]},
            r"studies\[0\]\.protocol: Input should be 'fast', 'moderate' or 'precise'",
        ),
        (
            {
                "name": "x",
                "recipe": "eos",
                "structures": [{"bulk": ["Cu"]}],
                "settings": {"pionts": 9},
            },
            r"studies\[0\]\.settings\.pionts: Extra inputs are not permitted",
        ),
        (
            {"name": "bad name!", "recipe": "static", "structures": [{"bulk": ["Cu"]}]},
            r"^name: String should match pattern",
        ),
        (
            {"name": "x", "recipe": "static", "structures": []},
            r"studies\[0\]\.structures: List should have at least 1 item",
        ),
        (
            {"name": "x", "recipe": "static", "structures": [{"bulk": ["Cu"], "file": "Cu.cif"}]},
            r"studies\[0\]\.structures\[0\]: each structure needs exactly one of 'bulk' or 'file'",
        ),
        (
            {"name": "x", "recipe": "static", "structures": [{"bulk": ["Cu"], "a": -3.6}]},
            r"studies\[0\]\.structures\[0\]\.a: Input should be greater than 0",
        ),
        (
            {
                "name": "x",
                "recipe": "static",
                "executor": {"type": "pbs"},
                "structures": [{"bulk": ["Cu"]}],
            },
            r"executor\.site: Field required",  # a batch queue needs a site profile
        ),
    ],
)
def test_bad_input_names_the_field(data, message):
    with pytest.raises(CampaignError, match=message):
        plan(data)


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nrecipe: static\nstructures: [{bulk: [Cu]\n")
    with pytest.raises(CampaignError,
                       match=r"campaign file campaign\.yaml: malformed YAML at line \d+"):
        read_campaign(path)


def test_missing_campaign_file(tmp_path):
    with pytest.raises(CampaignError, match="campaign file: no such file"):
        read_campaign(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(CampaignError, match="expected a mapping"):
        read_campaign(write(tmp_path, "- just\n- a list\n"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("force_large", [False, True])
def test_an_xyz_frame_declaring_ten_billion_atoms_is_refused_before_ase_reads_it(
    tmp_path, force_large
):
    """ASE steps over a frame's declared atoms line by line; a count of 10¹⁰ in a later frame
    (found by the structure-file fuzz) kept it busy for hours. The headers are checked first:
    against the atoms limit, and (with --force-large) against the lines the file has."""
    frame = 'Lattice="3.6 0 0 0 3.6 0 0 0 3.6" Properties=species:S:1:pos:R:3 pbc="T T T"'
    (tmp_path / "big.extxyz").write_text(
        f"2\n{frame}\nNi 0 0 0\nCu 1.8 1.8 0\n10000000000\n{frame}\nCu 0 0 0\nCu 1.8 1.8 0\n"
    )
    campaign = read_campaign(
        {"name": "x", "recipe": "static", "structures": [{"file": "big.extxyz", "index": ":"}]}
    )
    reason = "only 2 lines follow" if force_large else "more than the limit of 20,000 atoms"
    with pytest.raises(CampaignError, match=rf"structures\[0\]\.file: .*{reason}") as refused:
        plan_campaign(campaign, tmp_path, force_large=force_large)
    assert "big.extxyz (structure 1)" in str(refused.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("count", ["-2", "-5"])
def test_an_xyz_frame_with_a_negative_atom_count_is_refused(tmp_path, count):
    (tmp_path / "neg.xyz").write_text(f"1\n\nCu 0 0 0\n{count}\n\nCu 0 0 0\n")
    campaign = read_campaign(
        {"name": "x", "recipe": "static", "structures": [{"file": "neg.xyz", "index": ":"}]}
    )
    with pytest.raises(CampaignError, match=r"structures\[0\]\.file: "):
        plan_campaign(campaign, tmp_path)
