"""Cached results re-validated by content before they pass a gate.

An artifact folder carries its own parity (measured at export) and a sweep's cache carries mIoU figures; both are
claims the folder makes about itself. The model file's sha256 is checked on every read (``edgeseg.artifact``), but
a swapped model with an updated sha256 in its manifest passes that check. So before bench, check or sweep judge a
parity they did not measure in this run, one image goes through the artifact and the PyTorch reference now: when
its argmax agreement falls more than ``PROBE_SLACK`` below the recorded one, the recorded parity does not hold and
the gates judge the re-measurement instead (one image: cheap, and a different model disagrees on every image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError

# How far one image's argmax agreement may fall below the recorded mean over the export's parity images before
# the record is not believed: per-image agreement of a genuine int8 artifact scatters by a few points around its
# mean; a different model (other weights, another architecture) disagrees by tens of points.
PROBE_SLACK = 0.05


def reference_weights(manifest: dict) -> str | None:
    """The weights the PyTorch reference of an artifact loads: the shipped tag where it was one, else its path."""
    w = manifest.get("weights") or {}
    return w.get("tag") or w.get("path")


def recheck_parity(folder: Path, manifest: dict, image: np.ndarray, threads: int | None = None, reference=None):
    """The parity to judge for an artifact whose parity this run did not measure: the manifest's when one
    ``image`` run now through the artifact and the PyTorch ``reference`` (a module; default: the manifest's model
    and weights) agrees with it, else the re-measurement on that image, saying so. A reference that cannot be
    loaded here leaves the agreement unjudged (None) rather than believed."""
    from edgeseg.backends import load_artifact
    from edgeseg.commands.evaluate import load_model
    from edgeseg.eval.evaluate import torch_predictor
    from edgeseg.eval.parity import compare

    recorded = manifest.get("parity")
    if not recorded or recorded.get("argmax_agreement") is None:
        return recorded  # nothing claimed: the gates say "not measured"
    art = load_artifact(folder, threads)
    if reference is None:
        try:
            reference = load_model(manifest.get("model"), manifest.get("dataset"), reference_weights(manifest)).model
        except EdgesegError as exc:
            return {
                **recorded,
                "argmax_agreement": None,
                "runtime": f"{recorded.get('runtime')}; recorded parity not re-checked ({exc})",
            }
    probe = compare(torch_predictor(reference), art.run, [image], art.input_size, art.outputs_labels)
    if probe.argmax_agreement >= recorded["argmax_agreement"] - PROBE_SLACK:
        return recorded
    return {
        "images": 1,
        "argmax_agreement": probe.argmax_agreement,
        "max_abs_diff": probe.max_abs_diff,
        "snr_db": probe.snr_db,
        "runtime": (
            f"{art.runtime}, re-measured on 1 image: the recorded {100 * recorded['argmax_agreement']:.1f} % on "
            f"{recorded.get('images')} images does not hold for this model file"
        ),
        "rechecked": True,
    }
