"""TorchServe custom handler: prototypes from a model a team already serves with TorchServe.

Archive the model with this file as its handler (the model file is a
``torch.export`` ``.pt2`` or TorchScript file; its sidecar JSON, e.g. ``model.json``
with ``class_names``/``height``/``width``/``mean``/``std``, goes in ``--extra-files``)::

    torch-model-archiver --model-name vision --version 2 --serialized-file model.pt2 \\
        --extra-files model.json --handler protolens_server/torchserve/handler.py

Then ``POST /predictions/vision`` with a JSON body::

    {"class": "tabby cat", "steps": 64, "seed": 0, "prototypes": 1,
     "lr": 0.05, "transforms": "medium"}

answers ``{"class", "name", "prototypes": [{"png": <base64>, "probability",
"logit", "top5"}], "digest", "steps", "seed", "alpha"}``. Only those options, plus
``diversity``, ``parameterisation``, ``start``, ``alpha`` and ``alpha_penalty``
(``GenerationConfig`` fields), are accepted; a bad request gets a one-line error
naming the field. ``"alpha": true`` makes an alpha prototype (docs/modes.md): its PNG
is RGBA (grayscale+alpha for a grayscale model), its probability measured over
mid-grey. The model is loaded with protolens' own
loader (no pickles); the worker needs ``protolens[server]`` installed in the
Python TorchServe runs.

Limits: TorchServe is in limited maintenance; one request runs the whole
optimisation in the worker (set ``responseTimeout`` above your step budget),
there is no result cache, no progress and no cancel. The gRPC service is the
main path; this is for teams that already operate TorchServe.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ts.torch_handler.base_handler import BaseHandler

from protolens_server.errors import InvalidArgument, ProtolensError

_OPTIONS = (
    "steps",
    "lr",
    "prototypes",
    "transforms",
    "diversity",
    "parameterisation",
    "start",
    "alpha",
    "alpha_penalty",
)
MAX_STEPS = 2000


class PrototypeHandler(BaseHandler):
    """``initialize`` loads the model; ``handle`` answers one prototype request per input."""

    def initialize(self, context: Any) -> None:
        import torch

        from protolens_server.models.registry import load_path

        props = context.system_properties
        model_dir = Path(props.get("model_dir"))
        serialized = context.manifest["model"].get("serializedFile")
        if not serialized:
            raise InvalidArgument("serializedFile", "the archive names no model file")
        gpu = props.get("gpu_id")
        self.device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
        self.handle_ = load_path(model_dir / serialized, device=self.device)
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        return [self._answer(i, item, context) for i, item in enumerate(data)]

    def _answer(self, idx: int, item: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return self._generate(_request(item))
        except ProtolensError as exc:
            message = f"{exc.reason}: {exc}"
            context.set_response_status(code=400, phrase=message, idx=idx)
            return {"error": message}

    def _generate(self, req: dict[str, Any]) -> dict[str, Any]:
        from protolens_server.engine import GenerationConfig, generate
        from protolens_server.imageio import encode_png
        from protolens_server.models import resolve_class

        if "class" not in req:
            raise InvalidArgument("class", "name the class (index or name) to generate")
        cls = resolve_class(self.handle_, req["class"], field="class")
        options = {k: req[k] for k in _OPTIONS if k in req}
        unknown = sorted(set(req) - {"class", "seed", *_OPTIONS})
        if unknown:
            raise InvalidArgument(unknown[0], f"is not an option (use {', '.join(_OPTIONS)}, seed)")
        config = GenerationConfig.from_dict(options)
        if config.steps > MAX_STEPS:
            raise InvalidArgument("steps", f"at most {MAX_STEPS} per request")
        seed = int(req.get("seed", 0))
        prototypes = generate(self.handle_, [cls], config, seed=seed, device=self.device)
        names = self.handle_.class_names
        return {
            "class": cls,
            "name": names[cls] if cls < len(names) else str(cls),
            "digest": self.handle_.digest,
            "steps": config.steps,
            "seed": seed,
            "alpha": config.alpha,
            "prototypes": [
                {
                    "png": base64.b64encode(encode_png(p.image, alpha=config.alpha)).decode(),
                    "probability": float(p.probability),
                    "logit": float(p.logit),
                    "top5": [[int(c), float(q)] for c, q in p.top5],
                }
                for p in prototypes
            ],
        }


def _request(item: dict[str, Any]) -> dict[str, Any]:
    body = item.get("body", item.get("data", item)) if isinstance(item, dict) else item
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidArgument("body", f"not JSON: {exc.msg}") from exc
    if not isinstance(body, dict):
        raise InvalidArgument("body", 'send a JSON object such as {"class": 3, "steps": 64}')
    return body
