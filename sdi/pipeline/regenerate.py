"""Regenerate one generated image from its shard manifest row.

    python -m sdi.pipeline.regenerate --manifest results/demo/sei/gauss-g2.0/shards/0.parquet \\
        --sample-id 0003-000002 --samples results/demo/samples/gauss.parquet \\
        --sd resources/models/tiny/sd --out x.png

(or the ``sdi-regenerate`` console script). By default the whole batch the image was
generated in is rerun, so on the same hardware and software the PNG has the same bytes as
the stored one; ``--alone`` generates the image by itself (pixels within one 8-bit level of
the stored ones). ``--samples`` is needed for SEI variants (the vectors); for the text-only
baseline the manifest serves. With ``--compare`` the exit status says whether the bytes
equal those of the stored image (0 same, 1 different or stored image missing).

The command's Python API is :func:`regenerate_image`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

import sdi  # noqa: F401  (offline mode for the HF libraries)
from sdi.io.schemas import GENERATION_INPUT_COLUMNS
from sdi.models.generator import GenerationError, GenerationSettings, ImageGenerator
from sdi.models.schedulers import scheduler_from_json
from sdi.pipeline.generation import _check_samples, _provenance
from sdi.pipeline.provenance import _versions, save_png, vector_sha256

logger = logging.getLogger(__name__)


def regenerate_image(manifest_row: Mapping | pd.Series, samples: pd.DataFrame | np.ndarray | None,
                     generator: ImageGenerator, out_path: str | Path, *, exact: bool = True) -> Path:
    """Regenerate one image from its manifest row and write it (PNG with provenance) to out_path.

    samples: the samples table (vectors looked up by sample_id; for exact=True it must hold
        every sample of the row's ``batch``), or for a single image the row's vector itself
        ([d_cross] float32) or None in text mode.
    generator: the models and scheduler the manifest names (same model_id and scheduler):
        ``ImageGenerator.from_folders(sd, vae, scheduler=scheduler_from_json(row["scheduler"],
        row["scheduler_config"]), dtype=row["dtype"])``.
    exact: rerun the whole batch the image was generated in, so that on the same hardware
        and software the bytes are identical; False generates the image alone (pixels may
        differ from the original by float summation order: at most one level, on few pixels).
    """
    row = dict(manifest_row)
    made_by = generator.settings()
    differ = {k: (row[k], made_by[k]) for k in ("model_id", "scheduler") if made_by[k] != row[k]}
    if differ:
        raise GenerationError(f"sample {row['sample_id']} was generated with other models or scheduler than the "
                              f"generator's ((manifest, generator): {differ}); load the generator from the SD/VAE "
                              "folders that generated it, with the manifest row's scheduler")
    if generator.device.type != row["device"]:
        logger.warning("sample %s was generated on %s, regenerating on %s: pixels may differ slightly",
                       row["sample_id"], row["device"], generator.device.type)
    mode = row["mode"]
    members = [str(s) for s in row["batch"]] if exact else [str(row["sample_id"])]
    if isinstance(samples, pd.DataFrame):
        table = samples.set_index("sample_id", drop=False)
        missing = [s for s in members if s not in table.index]
        if missing:
            raise GenerationError(f"samples table lacks {missing[:5]} of the batch of {row['sample_id']}; pass the "
                                  "full samples.parquet, or exact=False to regenerate the image alone")
        batch = table.loc[members].reset_index(drop=True)
    else:
        if len(members) > 1:
            raise GenerationError(f"sample {row['sample_id']} was generated in a batch of {len(members)}; pass the "
                                  "samples table for an exact regeneration, or exact=False")
        batch = pd.DataFrame([{**{c: row[c] for c in GENERATION_INPUT_COLUMNS}, "vector": samples}])
    if "vector" not in batch.columns:
        batch = batch.assign(vector=None)
    _check_samples(batch, mode, generator.d_cross if mode == "sei" else None, what="samples for regeneration")
    target = members.index(str(row["sample_id"]))
    mine = batch.iloc[target]
    if int(mine.seed) != int(row["seed"]) or (mode == "sei" and vector_sha256(mine.vector) != row["vector_sha256"]):
        raise GenerationError(f"sample {row['sample_id']}: seed or vector in the samples table differ from the "
                              "manifest; pass the samples table the manifest was generated from")
    settings = GenerationSettings(mode, steps=int(row["steps"]), guidance_scale=float(row["guidance_scale"]),
                                  resolution=int(row["height"]), negative_prompt=row["negative_prompt"],
                                  eta=float(row["eta"]))
    images = generator.generate(batch, settings)
    provenance = {**_provenance(mine, settings, made_by, settings.resolution), "batch": members,
                  "versions": _versions()}
    return save_png(images[target], out_path, provenance)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdi-regenerate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, type=Path,
                        help="a shard manifest (results/<dataset>/sei/<variant>/shards/<i>.parquet)")
    parser.add_argument("--sample-id", required=True, help="sample_id of the image to regenerate")
    parser.add_argument("--samples", type=Path, help="the samples table the variant was generated from "
                        "(samples/<sampler>.parquet); needed for SEI variants")
    parser.add_argument("--sd", required=True, type=Path, help="Stable Diffusion folder that generated the image")
    parser.add_argument("--vae", type=Path, help="separate VAE folder, if the variant used one")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--alone", action="store_true", help="generate the image alone, not its whole batch")
    parser.add_argument("--compare", action="store_true", help="exit 1 unless the bytes equal the stored image's")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.manifest.is_file():
        print(f"--manifest {args.manifest}: file does not exist; pass a shard manifest "
              "(results/<dataset>/sei/<variant>/shards/<i>.parquet)", file=sys.stderr)
        return 2
    manifest = pd.read_parquet(args.manifest)
    rows = manifest[manifest.sample_id.astype(str) == args.sample_id]
    if rows.empty:
        print(f"--sample-id {args.sample_id}: not in {args.manifest} ({len(manifest)} rows, e.g. "
              f"{manifest.sample_id.iloc[0] if len(manifest) else 'none'}); is it in another shard?", file=sys.stderr)
        return 2
    row = rows.iloc[0]
    if args.samples is None and row["mode"] != "text":
        print(f"sample {args.sample_id} is an SEI image: pass --samples (the samples table with its vector)",
              file=sys.stderr)
        return 2
    try:
        if args.samples is not None:
            from sdi.pipeline.sampling import read_samples

            samples = read_samples(args.samples)
        else:
            samples = manifest  # has every column a text-mode sample needs
        scheduler = scheduler_from_json(row["scheduler"], row["scheduler_config"])
        generator = ImageGenerator.from_folders(args.sd, args.vae, scheduler=scheduler, dtype=row["dtype"],
                                                device=args.device)
        out = regenerate_image(row, samples, generator, args.out, exact=not args.alone)
    except (GenerationError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    if args.compare:
        stored = Path(row["path"])
        same = stored.is_file() and stored.read_bytes() == out.read_bytes()
        print(f"{'identical to' if same else 'differs from'} {stored}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
