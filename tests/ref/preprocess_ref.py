#!/usr/bin/env python3
"""Reference pixel tensors from Hugging Face transformers for tests/test_preprocess.c.

Runs where transformers (5.17), torch, torchvision and PIL are installed; no network:

    PYTHONUNBUFFERED=1 python3 tests/ref/preprocess_ref.py tests/fixtures/images OUTDIR

For every config in CONFIGS it writes preprocessor_config.json into a temporary folder and builds
the image processor the way LlavaProcessor.from_pretrained would, with
AutoImageProcessor.from_pretrained(folder) and transformers' default backend (what users get).
Every image of the folder is opened with PIL.Image.open and handed to the processor as is (the
processor's convert_to_rgb does the RGB conversion).

OUTDIR/
  configs/<cfg>.json        the preprocessor_config.json used
  decoded/<stem>.npy|.png   PIL's Image.open(p).convert("RGB") (uint8 HxWx3; PNG when large)
  <cfg>/<stem>.npy          pixel_values[0], float32 [3][H][W], for the small configs
  <cfg>/<stem>.png          for large crops: the uint8 image after resize + centre crop (run with
                            do_rescale=False, do_normalize=False), HxWx3 ...
  <cfg>/<stem>_u8.npy       ... the same for the small configs, [3][H][W] ...
  <cfg>/levels.npy          ... and float32 [3][256], the processor's output for each uint8
                            level; the script checks pixel_values == levels[c][u8] exactly, and
                            for large crops keeps the float output only when that fails
  report.json               versions, classes, per-image checks, the other backend's differences
  sources.txt               the source of the functions that decide the numbers
and OUTDIR.tar.gz of it all.

tests/fixtures/preprocess/ is a selection of OUTDIR, kept small (needs numpy and PIL only):

    python3 tests/ref/preprocess_ref.py --select OUTDIR tests/fixtures/preprocess

It keeps the configs, report.json, PIL's decodes except those of the large RGB8 PNGs (their
pixels are checked against the pattern they were written from), the float tensors of the "tiny"
config, the uint8 crops and level tables of the other small configs, and for llava15 the level
table, the uint8 crops of LLAVA15_KEEP, and an FNV-1a 64 checksum of every image's uint8 crop.
"""
import inspect
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import traceback

import numpy as np
from PIL import Image

LLAVA15 = {
    "crop_size": {"height": 336, "width": 336},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "LlavaProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 336},
}


def variant(**kw):
    c = json.loads(json.dumps(LLAVA15))
    c.update(kw)
    return c


CONFIGS = {
    # the llava-1.5 checkpoints' own file
    "llava15": LLAVA15,
    # a tiny test model's: shortest edge 30, crop 28
    "tiny": variant(size={"shortest_edge": 30}, crop_size={"height": 28, "width": 28}),
    # LlavaImageProcessor with do_pad: pad to square with the mean colour before resizing
    "tiny_pad": variant(size={"shortest_edge": 30}, crop_size={"height": 28, "width": 28},
                        image_processor_type="LlavaImageProcessor", do_pad=True),
    # size as height/width (no aspect ratio kept), narrower than the crop: crop pads with zeros
    "hw_pad": variant(size={"height": 40, "width": 24}, crop_size={"height": 28, "width": 28}),
    # bilinear resampling
    "tiny_bilinear": variant(size={"shortest_edge": 30}, crop_size={"height": 28, "width": 28},
                             resample=2),
}
LLAVA15_KEEP = ["rgb_wide", "rgb_tall", "rgb_big", "rgb_tiny", "rgb_odd", "photo420", "gray16",
                "palette8_trns"]
BIG_CROP = 64  # crops larger than this are stored as uint8 PNG + levels table
FULL_FLOAT_TOO = {"rgb_tiny", "rgb_wide"}  # also store these big outputs as float, as a cross-check


def log(*a):
    print(*a, flush=True)


def to_np(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def make_processor(cfg_dir, **kw):
    from transformers import AutoImageProcessor
    return AutoImageProcessor.from_pretrained(cfg_dir, **kw)


def other_backend(cfg_dir, default_cls):
    """The non-default backend (PIL), for information."""
    tries = [dict(backend="pil"), dict(backend="python"), dict(use_fast=False)]
    for kw in tries:
        try:
            p = make_processor(cfg_dir, **kw)
            if type(p).__name__ != default_cls or getattr(p, "backend", None) not in (None, "torchvision"):
                return p, kw
        except Exception as e:  # noqa: BLE001
            log(f"  other backend {kw}: {type(e).__name__}: {e}")
    try:
        import transformers
        name = default_cls.replace("Fast", "") + "Pil"
        cls = getattr(transformers, name)
        return cls.from_pretrained(cfg_dir), {"class": name}
    except Exception as e:  # noqa: BLE001
        log(f"  other backend by class: {type(e).__name__}: {e}")
    return None, None


def write_sources(path, proc):
    out = []

    def add(label, obj):
        try:
            out.append(f"===== {label}\n{inspect.getsource(obj)}\n")
        except Exception as e:  # noqa: BLE001
            out.append(f"===== {label}: {type(e).__name__}: {e}\n")

    for cls in type(proc).__mro__:
        for name in ("resize", "center_crop", "_preprocess", "preprocess", "_rescale_and_normalize",
                     "rescale_and_normalize", "_fuse_mean_std_and_rescale_factor", "normalize",
                     "rescale", "convert_to_rgb", "process_image", "_process_image", "pad_to_square"):
            if name in cls.__dict__:
                add(f"{cls.__module__}.{cls.__qualname__}.{name}", cls.__dict__[name])
    try:
        import transformers.image_transforms as it
        add("image_transforms.get_resize_output_image_size", it.get_resize_output_image_size)
        add("image_transforms.convert_to_rgb", it.convert_to_rgb)
    except Exception as e:  # noqa: BLE001
        out.append(f"image_transforms: {e}\n")
    try:
        import transformers.models.auto.image_processing_auto as ia
        add("image_processing_auto", ia)
    except Exception as e:  # noqa: BLE001
        out.append(f"image_processing_auto: {e}\n")
    try:
        from torchvision.transforms.v2 import functional as tvF
        import torchvision.transforms.v2.functional._geometry as geo
        add("tvF.resize_image", geo.resize_image)
        add("tvF._do_native_uint8_resize_on_cpu", getattr(geo, "_do_native_uint8_resize_on_cpu", None))
        add("tvF.normalize_image", tvF.normalize_image)
        add("tvF.center_crop_image", tvF.center_crop_image)
    except Exception as e:  # noqa: BLE001
        out.append(f"torchvision: {e}\n")
    with open(path, "w") as f:
        f.write("".join(out))


CAPABILITY_CHECK = r"""
import sys, json, numpy as np, torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
res = {"capability": torch.backends.cpu.get_cpu_capability()}
for path, h, w in json.loads(sys.argv[1]):
    t = tvF.pil_to_tensor(Image.open(path).convert("RGB")).unsqueeze(0).contiguous()
    o = tvF.resize(t, [h, w], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
    res[path + f"@{h}x{w}"] = o.numpy().tobytes().hex()
print(json.dumps(res))
"""


def capability_check(images, report):
    """Whether torch's uint8 antialiased bicubic gives the same bytes with AVX2/AVX512 kernels and
    with the generic (non-vectorized) one."""
    jobs = []
    for p in images:
        with Image.open(p) as im:
            w, h = im.size
        for short in (336, 30):
            if w <= h:
                jobs.append((p, int(short * h / w), short))
            else:
                jobs.append((p, short, int(short * w / h)))
    results = {}
    for cap in ("default", "avx2", "avx512", None):
        env = dict(os.environ)
        if cap:
            env["ATEN_CPU_CAPABILITY"] = cap
        try:
            r = subprocess.run([sys.executable, "-c", CAPABILITY_CHECK, json.dumps(jobs)], env=env,
                               capture_output=True, text=True, timeout=240)
            if r.returncode != 0:
                results[str(cap)] = {"error": r.stderr[-2000:]}
                continue
            results[str(cap)] = json.loads(r.stdout.strip().splitlines()[-1])
        except Exception as e:  # noqa: BLE001
            results[str(cap)] = {"error": f"{type(e).__name__}: {e}"}
    summary = {}
    base = results.get("None", {})
    for cap, r in results.items():
        if "error" in r:
            summary[cap] = r["error"][-500:]
            continue
        same = all(r.get(k) == v for k, v in base.items() if k != "capability")
        summary[cap] = {"reported_capability": r.get("capability"), "identical_to_default_run": same}
    report["cpu_capability_check"] = summary
    log("capability check:", json.dumps(summary, indent=1))


def main(img_dir, out_dir, report):
    os.makedirs(out_dir, exist_ok=True)
    try:
        import PIL
        import torch
        import torchvision
        import transformers
        report["versions"] = {
            "python": sys.version, "numpy": np.__version__, "PIL": PIL.__version__,
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        log(json.dumps(report["versions"], indent=1))
    except Exception:  # noqa: BLE001
        report["errors"].append(traceback.format_exc())

    images = sorted(os.path.join(img_dir, f) for f in os.listdir(img_dir)
                    if f.lower().endswith((".png", ".jpg", ".jpeg")))

    os.makedirs(os.path.join(out_dir, "decoded"), exist_ok=True)
    for p in images:
        stem = os.path.splitext(os.path.basename(p))[0]
        try:
            with Image.open(p) as im:
                mode = im.mode
                rgb = np.asarray(im.convert("RGB"))
            report["images"][stem] = {"pil_mode": mode, "size": list(rgb.shape)}
            if rgb.shape[0] * rgb.shape[1] <= 40000:
                np.save(os.path.join(out_dir, "decoded", stem + ".npy"), rgb)
            else:
                Image.fromarray(rgb).save(os.path.join(out_dir, "decoded", stem + ".png"))
        except Exception:  # noqa: BLE001
            report["errors"].append(f"decode {p}: " + traceback.format_exc())

    os.makedirs(os.path.join(out_dir, "configs"), exist_ok=True)
    sources_written = False
    for cname, cfg in CONFIGS.items():
        log(f"== config {cname}")
        crep = report["configs"].setdefault(cname, {"images": {}})
        with open(os.path.join(out_dir, "configs", cname + ".json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        tmp = tempfile.mkdtemp()
        with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
            json.dump(cfg, f)
        try:
            proc = make_processor(tmp)
        except Exception:  # noqa: BLE001
            crep["error"] = traceback.format_exc()
            log(crep["error"])
            continue
        crep["class"] = f"{type(proc).__module__}.{type(proc).__name__}"
        crep["backend"] = str(getattr(proc, "backend", None))
        try:
            crep["to_dict"] = json.loads(json.dumps(proc.to_dict(), default=str))
        except Exception as e:  # noqa: BLE001
            crep["to_dict"] = str(e)
        log(f"  class {crep['class']} backend {crep['backend']}")
        if not sources_written:
            write_sources(os.path.join(out_dir, "sources.txt"), proc)
            sources_written = True
        other, other_kw = other_backend(tmp, type(proc).__name__)
        crep["other_backend"] = (f"{type(other).__module__}.{type(other).__name__} via {other_kw}"
                                 if other is not None else None)
        odir = os.path.join(out_dir, cname)
        os.makedirs(odir, exist_ok=True)
        crop = cfg["crop_size"]["height"]
        big = crop > BIG_CROP

        levels = None
        # every uint8 level through the same rescale/normalize code, no resize or crop
        lv = np.zeros((16, 16, 3), np.uint8)
        i = np.arange(256, dtype=np.int64).reshape(16, 16)
        lv[..., 0], lv[..., 1], lv[..., 2] = i, 255 - i, (i * 7) % 256
        try:
            o = to_np(proc(images=Image.fromarray(lv), do_resize=False, do_center_crop=False,
                           return_tensors="pt")["pixel_values"])[0]
            levels = np.zeros((3, 256), np.float32)
            for c in range(3):
                levels[c, lv[..., c].reshape(-1)] = o[c].reshape(-1)
            np.save(os.path.join(odir, "levels.npy"), levels)
        except Exception:  # noqa: BLE001
            crep["levels_error"] = traceback.format_exc()
            log(crep["levels_error"])

        for p in images:
            stem = os.path.splitext(os.path.basename(p))[0]
            irep = crep["images"].setdefault(stem, {})
            try:
                with Image.open(p) as im:
                    pv = to_np(proc(images=im, return_tensors="pt")["pixel_values"])[0]
                irep["shape"] = list(pv.shape)
                irep["dtype"] = str(pv.dtype)
                if not big or stem in FULL_FLOAT_TOO:
                    np.save(os.path.join(odir, stem + ".npy"), pv.astype(np.float32))
                with Image.open(p) as im:
                    u8 = to_np(proc(images=im, do_rescale=False, do_normalize=False,
                                    return_tensors="pt")["pixel_values"])[0]
                irep["u8_dtype"] = str(u8.dtype)
                u8i = np.rint(u8).astype(np.int64)
                ok_int = bool(np.all(u8i == u8)) and int(u8i.min()) >= 0 and int(u8i.max()) <= 255
                irep["u8_is_integral"] = bool(ok_int)
                if ok_int and levels is not None:
                    rec = np.stack([levels[c][u8i[c]] for c in range(3)])
                    irep["levels_reconstruction_max_abs_err"] = float(np.abs(rec - pv).max())
                u8img = np.clip(u8i, 0, 255).astype(np.uint8)
                if big:
                    Image.fromarray(u8img.transpose(1, 2, 0)).save(os.path.join(odir, stem + ".png"))
                else:
                    np.save(os.path.join(odir, stem + "_u8.npy"), u8img)
                if big and not (ok_int and levels is not None and
                        irep.get("levels_reconstruction_max_abs_err", 1) == 0.0):
                    # the compact form does not hold: keep the float output
                    np.save(os.path.join(odir, stem + ".npy"), pv.astype(np.float32))
                if other is not None:
                    with Image.open(p) as im:
                        po = to_np(other(images=im, return_tensors="np")["pixel_values"])[0]
                    if po.shape == pv.shape:
                        d = np.abs(po.astype(np.float64) - pv.astype(np.float64))
                        irep["other_backend_max_abs_diff"] = float(d.max())
                        irep["other_backend_frac_diff_gt_1e-5"] = float((d > 1e-5).mean())
                    else:
                        irep["other_backend_shape"] = list(po.shape)
                log(f"  {stem}: {irep}")
            except Exception:  # noqa: BLE001
                irep["error"] = traceback.format_exc()
                log(f"  {stem}: ERROR {irep['error']}")

    try:
        capability_check([p for p in images if os.path.basename(p).startswith("rgb_")], report)
    except Exception:  # noqa: BLE001
        report["errors"].append("capability check: " + traceback.format_exc())


def json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def select(src, dst):
    import shutil
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    shutil.copytree(os.path.join(src, "configs"), os.path.join(dst, "configs"))
    shutil.copy(os.path.join(src, "report.json"), dst)
    os.makedirs(os.path.join(dst, "decoded"))
    for f in sorted(os.listdir(os.path.join(src, "decoded"))):
        if f.endswith(".npy") or not f.startswith("rgb_"):
            shutil.copy(os.path.join(src, "decoded", f), os.path.join(dst, "decoded"))
    for cname in CONFIGS:
        s, d = os.path.join(src, cname), os.path.join(dst, cname)
        os.makedirs(d)
        shutil.copy(os.path.join(s, "levels.npy"), d)
        for f in sorted(os.listdir(s)):
            stem = f.rsplit(".", 1)[0]
            if cname == "tiny":
                keep = f.endswith(".npy") and not f.endswith("_u8.npy")
            elif cname == "llava15":
                keep = f.endswith(".png") and stem in LLAVA15_KEEP
            else:
                keep = f.endswith("_u8.npy")
            if keep:
                shutil.copy(os.path.join(s, f), d)
        if cname == "llava15":
            lines = ["# FNV-1a 64 of the uint8 crop (336x336x3, packed RGB, row-major) that "
                     "transformers 5.17",
                     "# produced for each image (do_rescale=False, do_normalize=False); see "
                     "tests/ref/preprocess_ref.py"]
            for f in sorted(os.listdir(s)):
                if f.endswith(".png"):
                    a = np.asarray(Image.open(os.path.join(s, f)).convert("RGB"))
                    lines.append(f"{f[:-4]} {fnv1a64(a.tobytes()):016x}")
            with open(os.path.join(d, "checksums.txt"), "w") as fh:
                fh.write("\n".join(lines) + "\n")


if __name__ == "__main__" and sys.argv[1] == "--select":
    select(sys.argv[2], sys.argv[3])
    sys.exit(0)

if __name__ == "__main__":
    out = sys.argv[2]
    rep = {"configs": {}, "images": {}, "errors": []}
    try:
        main(sys.argv[1], out, rep)
    except Exception:  # noqa: BLE001
        rep["errors"].append(traceback.format_exc())
        log(rep["errors"][-1])
    finally:
        # whatever happened, keep what was made
        os.makedirs(out, exist_ok=True)
        try:
            with open(os.path.join(out, "report.json"), "w") as f:
                json.dump(rep, f, indent=1, sort_keys=True, default=json_default)
        except Exception:  # noqa: BLE001
            log(traceback.format_exc())
        tar_path = out.rstrip("/") + ".tar.gz"
        with tarfile.open(tar_path, "w:gz") as t:
            t.add(out, arcname=os.path.basename(out.rstrip("/")))
        log(f"wrote {tar_path}")
