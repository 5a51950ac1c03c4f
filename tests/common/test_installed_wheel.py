"""The wheel carries its models: ``pip install`` of it into a fresh virtual environment,
outside the checkout, runs ``agegender predict`` on a real face photo."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: What a source distribution of the project holds (enough to build the wheel).
SOURCE = ("pyproject.toml", "setup.py", "README.md", "common", "services", "training",
          "bench", "models")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd[:3]}... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_installed_wheel_predicts_with_its_own_models(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} cannot build this project offline "
                    f"(>= 77 reads its SPDX license); pip install '.[test]' brings it")
    # given a copy of the source tree (so the build leaves the checkout alone) built into
    # a wheel, offline
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCE:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("agegender-*.whl")
    # and installed into a fresh virtual environment that borrows only the third-party
    # packages of this one (numpy, OpenCV, ONNX Runtime, ...: a .pth line, whose own .pth
    # files, such as an editable install of this checkout, are not read)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
                   ).stdout.strip()
    borrowed = [p for p in dict.fromkeys([*site.getsitepackages(), *sys.path])
                if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    with open(os.path.join(purelib, "_borrowed_site.pth"), "w") as f:
        f.write("\n".join(sorted(borrowed)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)])
    # and a real face photo (scikit-image's public-domain astronaut) in a folder outside
    # the checkout, which is also where the commands run, with no PYTHONPATH
    import cv2
    from skimage import data
    work = tmp_path / "work"
    work.mkdir()
    photo = work / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AGEGENDER_MODELS_DIR", "PYTHONHOME")}
    # when the installed package is asked where its code and models are
    where = json.loads(_run([str(python), "-c", (
        "import json, common; from common.models import models_dir, shipped_models; "
        "print(json.dumps([common.__file__, str(models_dir()), shipped_models()]))")],
        cwd=work, env=env).stdout)
    # then both come from the environment's site-packages, not from the checkout
    assert where[0].startswith(purelib) and where[1].startswith(purelib), where
    assert where[1].endswith("agegender_models") and {"compact", "seed"} <= set(where[2])
    # when `agegender predict` runs on the photo
    out = _run([str(venv / "bin" / "agegender"), "predict", str(photo), "--threads", "1"],
               cwd=work, env=env)
    # then it prints one face with an age and a gender, read by the shipped model
    (line,) = out.stdout.strip().splitlines()
    face = json.loads(line)
    assert face["file"] == str(photo) and face["gender"] in ("female", "male")
    x1, y1, x2, y2 = face["box"]
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200     # her face
    assert 0 < face["age"] < 100 and face["age_range"][0] <= face["age"] <= face["age_range"][1]
    assert "1 of 1 images read, 1 face\n" in out.stderr
