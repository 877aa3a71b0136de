"""The steps of image, mask, extract, cutout and info: plain functions, same files as the CLI."""

import sys

import pytest
from astropy.io import fits

from conftest import TEST_DATA, run_main
from ifu_extract.errors import ParameterError
from ifu_extract.steps._outputs import OutputError
from ifu_extract.steps.cutout import CutoutOptions, run_cutout
from ifu_extract.steps.extract import ExtractOptions, run_extract
from ifu_extract.steps.image import ImageOptions, run_image
from ifu_extract.steps.info import run_info
from ifu_extract.steps.mask import MaskConfig, run_mask

CUBE, CAT, SEG = TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt", TEST_DATA / "gx_segmap.fits"


def test_steps_use_no_click():
    for name in ("mask", "extract", "cutout", "image", "info"):
        assert "click" not in vars(sys.modules[f"ifu_extract.steps.{name}"]), name


def test_steps_write_what_the_commands_write(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    img = run_image(CUBE, tmp_path / "white.fits", ImageOptions())
    assert img.image.meta["IMGTYPE"][0] == "white" and img.output.exists()
    res = run_main(["image", CUBE, "-o", tmp_path / "white_cli.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    assert img.output.read_bytes() == (tmp_path / "white_cli.fits").read_bytes()

    masks = run_mask(CUBE, CAT, [SEG], tmp_path / "m.fits", MaskConfig(fwhm=0.75), white=img.output)
    assert masks.n_masked == masks.n_objects == 2 and masks.count("union") == 2
    res = run_main(["mask", CUBE, CAT, "--segmap", SEG, "-o", tmp_path / "m_cli.fits", "--fwhm", "0.75",
                    "--white", img.output], capfd)
    assert res.exit_code == 0, res.stderr
    assert masks.output.read_bytes() == (tmp_path / "m_cli.fits").read_bytes()

    ext = run_extract(CUBE, CAT, masks.output, tmp_path / "ext", ExtractOptions(fwhm=0.75))
    assert ext.n_ok == 2 and ext.summary.exists()
    res = run_main(["extract", CUBE, CAT, "--masks", masks.output, "-o", tmp_path / "ext_cli",
                    "--fwhm", "0.75"], capfd)
    assert res.exit_code == 0, res.stderr
    for name in ["summary.tsv"] + [f"sources/{r['ID']}.fits" for r in ext.rows]:
        assert (tmp_path / "ext" / name).read_bytes() == (tmp_path / "ext_cli" / name).read_bytes(), name

    cut = run_cutout(CUBE, tmp_path / "cut", catalog=CAT, options=CutoutOptions(size=2.0))
    assert cut.n_ok == 2
    with fits.open(tmp_path / "cut" / "1.fits") as hdul:
        assert hdul["DATA"].data.shape[1:] == (10, 10)
    info = run_info(CUBE)
    assert info.info["shape"] == {"nwave": 160, "ny": 20, "nx": 20}
    res = run_main(["info", CUBE], capfd)
    assert res.exit_code == 0 and info.text() in res.stdout


def test_step_errors_name_parameters(tmp_path):
    with pytest.raises(OutputError) as err:
        run_mask(CUBE, CAT, [SEG], tmp_path / "no" / "m.fits")
    assert err.value.params == ("output",)
    with pytest.raises(ParameterError) as err:
        run_mask(CUBE, CAT, [SEG], tmp_path / "m.fits", MaskConfig(mode="both"))
    assert err.value.params == ("mode",) and "unknown mode 'both'" in str(err.value)
    with pytest.raises(ParameterError) as err:
        run_image(CUBE, tmp_path / "i.fits", ImageOptions(line=7000.0, wave_range=(6000.0, 7000.0)))
    assert err.value.params == ("line", "wave_range")
    assert not (tmp_path / "m.fits").exists() and not (tmp_path / "i.fits").exists()
