"""Path-similarity scores around the engine: reference sets, their cached statistics, scoring.

- ``naming``: registered reference sets (a name under ``reference_root``), no torch;
- ``cache``: the one cache directory (``$PROTOLENS_CACHE_DIR`` or ``~/.cache/protolens``)
  and the statistics cache kept in memory and on disk there;
- ``references``: a reference set (folder or pairs), its content digest, its images;
- ``statistics``: a model's reference statistics for a set (computed once, cached);
- ``scoring``: ``score_prototypes``, the one call the CLI, checks and workers make; it
  scores the 8-bit PNG a user receives, not the float image;
- ``samples``: scikit-image's sample photos as a small reference set (the demo).

Submodules are imported by name (``from protolens_server.scores.scoring import
score_prototypes``) so that the light ones (``naming``) do not pull in torch.
"""
