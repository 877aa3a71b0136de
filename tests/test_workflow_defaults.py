"""The published workflow's defaults are ``ifu-extract run``'s, plus the demo's fallback PSF FWHM.

`make demo` is ``run`` with its defaults and ``--fwhm-fallback 0.75`` (the minicube has no FSF
keywords and no star to fit one on); the Galaxy workflow run with its form unchanged must give the
same summary.  Here, without Galaxy: every parameter of the image, detect, mask and extract steps
of the .ga (its value, or the default of the workflow input connected to it) equals what ``run``
gives that step, and the "PSF FWHM if the cube has no FSF keywords" input reaches every step that
takes a PSF as its fallback, as ``run --fwhm-fallback`` does, never as the FWHM that overrides the
cube's own PSF (``--fwhm``).  The workflow test (tests/galaxy/workflow/compare_chunks.sh,
compare_run.py) runs both and compares the outputs.
"""

import json
from pathlib import Path

import pytest

from ifu_extract.commands.demo import DEMO_FWHM
from ifu_extract.commands.run import build_request

GA = Path(__file__).resolve().parents[1] / "workflows" / "ifu-spectral-extraction" / "ifu-spectral-extraction.ga"
PSF_LABEL = "PSF FWHM if the cube has no FSF keywords"

#: Per tool step: .ga parameter path -> the field of run's step configuration it sets.
FIELDS = {
    "detect": {
        "thresh": "thresh", "thresh_type": "thresh_type", "minarea": "minarea",
        "match_radius": "match_radius",
        "background_options|back_size": "back_size",
        "background_options|back_filter_size": "back_filter_size",
        "background_options|back_filter_thresh": "back_filter_thresh",
        "background_options|back_mask_sources": "back_mask_sources",
        "background_options|back_mask_dilate": "back_mask_dilate",
        "background_options|mask_thresh": "mask_thresh",
        "filtering|kernel|filter_kernel": "filter_kernel",
        "filtering|kernel|filter_fwhm": "filter_fwhm",
        "filtering|filter_type": "filter_type",
        "deblending|deblend_nthresh": "deblend_nthresh", "deblending|deblend_cont": "deblend_cont",
        "deblending|clean": "clean", "deblending|clean_param": "clean_param",
        "photometry|kron_factor": "kron_factor", "photometry|kron_min": "kron_min",
        "photometry|min_radius": "min_radius",
    },
    "mask": {
        "size": "size", "mode": "mode", "advanced|fwhm": "fwhm",
        "advanced|fwhm_fallback": "fallback_fwhm",
        "advanced|match_radius": "match_radius", "advanced|sky_grow": "sky_grow",
        "advanced|min_coverage": "min_coverage", "advanced|split": "split",
        "advanced|voronoi": "voronoi",
    },
    "extract": {
        "apertures_0|aperture": "apertures", "aperture_method": "aperture_method",
        "skysub": "skysub", "psf_weights|fwhm": "fwhm", "psf_weights|fwhm_fallback": "fallback_fwhm",
        "psf_weights|beta": "beta",
        "psf_weights|psf_kind": "psf_kind", "psf_weights|psf_radius": "psf_radius",
        "wave_range": "wave_range",
    },
}
#: Every parameter through which a step takes the fallback PSF FWHM, and the one that would
#: override the cube's own PSF (left empty by the workflow).
PSF_PARAMS = {"mask": "advanced|fwhm_fallback", "extract": "psf_weights|fwhm_fallback",
              "deblend": "psf|fwhm_fallback"}
FWHM_PARAMS = {"mask": "advanced|fwhm", "extract": "psf_weights|fwhm", "deblend": "psf|fwhm"}


def _steps():
    steps = json.loads(GA.read_text())["steps"]
    return {s.get("label"): s for s in steps.values()}, {s["id"]: s for s in steps.values()}


def _input_default(step) -> object:
    assert step["type"] == "parameter_input", f"{step.get('label')} is not a workflow parameter"
    return json.loads(step["tool_state"])["default"]


def _value(step, path: str, by_id):
    """The value a step's parameter *path* takes with the workflow's defaults."""
    conn = step["input_connections"].get(path)
    if conn is not None:
        return _input_default(by_id[conn["id"]])
    value = json.loads(step["tool_state"])
    for part in path.split("|"):
        if "_" in part and part.rsplit("_", 1)[1].isdigit():     # a repeat: apertures_0
            name, index = part.rsplit("_", 1)
            value = value[name][int(index)]
        else:
            value = value[part]
    assert not (isinstance(value, dict) and value.get("__class__")), f"{path}: unconnected {value}"
    return None if value == "" else value


@pytest.fixture(scope="module")
def workflow():
    return _steps()


def test_psf_input_is_the_demo_fwhm_and_reaches_every_step(workflow):
    by_label, by_id = workflow
    assert _input_default(by_label[PSF_LABEL]) == DEMO_FWHM
    psf_id = by_label[PSF_LABEL]["id"]
    for label, path in PSF_PARAMS.items():
        conn = by_label[label]["input_connections"].get(path)
        assert conn is not None and conn["id"] == psf_id, \
            f"the {label} step's {path} is not the workflow's {PSF_LABEL} input"


def test_workflow_never_overrides_the_cubes_psf(workflow):
    """The FWHM that wins over a cube's FSF keywords (``--fwhm``) is left empty at every step."""
    by_label, by_id = workflow
    for label, path in FWHM_PARAMS.items():
        assert path not in by_label[label]["input_connections"], \
            f"the {label} step's {path} is connected: it would override the cube's own PSF"
        assert _value(by_label[label], path, by_id) is None, f"the {label} step sets {path}"


@pytest.mark.parametrize("label", sorted(FIELDS))
def test_step_parameters_are_runs_defaults(workflow, label):
    by_label, by_id = workflow
    plan = build_request("cube.fits", "cat.txt", "out", options={"fallback_fwhm": DEMO_FWHM}).plan
    config = getattr(plan, label)
    step = by_label[label]
    differ = []
    for path, field in FIELDS[label].items():
        got, want = _value(step, path, by_id), getattr(config, field)
        if field == "apertures":
            want = want[0] if len(want) == 1 else want
        same = got == pytest.approx(want) if isinstance(want, float) else got == want
        if not same:
            differ.append(f"{path}: workflow {got!r}, run {want!r}")
    assert not differ, f"the workflow's {label} step differs from run's: " + "; ".join(differ)


def test_image_fwhm_input_reaches_deblend(workflow):
    """The ancillary image's PSF FWHM is the deblend step's --image-fwhm, with run's default."""
    by_label, by_id = workflow
    conn = by_label["deblend"]["input_connections"]["model_image|image_fwhm"]
    assert by_id[conn["id"]]["label"] == "Ancillary image PSF FWHM"
    plan = build_request("cube.fits", "cat.txt", "out", flags={"deblend": True}).plan
    assert _input_default(by_id[conn["id"]]) == plan.deblend.fit.image_fwhm == 0.0


def test_line_scan_switch_is_runs(workflow):
    """"Find line emitters" is ``run --line-scan``: off by default as in run; when on, detect
    scans the cube (its detections from the white-light step's image, ``--white``) with run's
    scan defaults and the fallback PSF, and extract reads its emitter images (``MUSE_NB``)."""
    from ifu_extract.linescan import ScanConfig

    by_label, by_id = workflow
    det, ext = by_label["detect"], by_label["extract"]
    conn = det["input_connections"]["lines|line_scan"]
    assert by_id[conn["id"]]["label"] == "Find line emitters"
    plan = build_request("cube.fits", "cat.txt", "out", options={"fallback_fwhm": DEMO_FWHM}).plan
    assert _input_default(by_id[conn["id"]]) is plan.line_scan is False
    assert by_id[det["input_connections"]["image_or_cube"]["id"]]["label"] == "Datacube"
    assert by_id[det["input_connections"]["white"]["id"]]["label"] == "white_light"
    assert by_id[det["input_connections"]["lines|fwhm_fallback"]["id"]]["label"] == PSF_LABEL
    assert _value(det, "lines|line_fwhm", by_id) is None        # the cube's own PSF first
    cfg = ScanConfig(merge_radius=plan.match_radius)             # what run's scan uses
    for path, want in (("lines|line_snr", cfg.snr), ("lines|line_max_false", cfg.max_false),
                       ("lines|line_profile_fwhm", cfg.line_fwhm),
                       ("lines|line_continuum_width", cfg.continuum_width),
                       ("lines|line_merge_radius", cfg.merge_radius),
                       ("lines|line_window", cfg.window), ("lines|line_side_width", cfg.side_width),
                       ("lines|no_default_sky", False), ("lines|line_images", True)):
        assert _value(det, path, by_id) == pytest.approx(want), path
    conn = ext["input_connections"]["line_images"]
    assert conn == {"id": det["id"], "output_name": "line_images_out"}
