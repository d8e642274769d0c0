"""protolens server side: engine, model sources, queue, workers and the gRPC API."""

ENGINE_VERSION = "0.3.9"
"""Bumped whenever the engine's output for the same inputs may change; part of every cache key.

0.2.2: scores version 2 (significance, intervals, median summary, scored on the stored PNG).
0.2.3: the alpha (opacity) fields in the config.
0.3.0: self-tuning defaults: margin objective, convergence stopping within max_steps, a
learning-rate finder (lr 0), per-image Adam with a relative epsilon, a final cool-down.
0.3.3: the learning-rate finder probes 4 classes, scores each rate per class between that
class's worst and best loss, and takes one grid step below the end of the range of good
rates above the best (never the grid's top); was: one class, one step below the best.
0.3.4: the BatchNorm-statistics prior is off by default (``bn_prior`` 0, was 0.01): on the
self-tuning optimisation it lowered EfficientNet-Lite0's path similarity (docs/scores.md).
0.3.5: the learning-rate finder (``FINDER_VERSION`` 3) probes each class from two seeds and
takes the half-octave rate nearest to the score-weighted geometric mean of the good rates
(at most 0.2), which moves little with probe noise; was: one seed, one grid step below the
end of the good range (bench/results/finder_robustness).
0.3.6: the learning-rate finder (``FINDER_VERSION`` 4) probes 0.025 .. 0.4, no longer 0.8
(never chosen; it only set each probe's worst loss): a sixth fewer probe images, the same
rate on 42 of 48 saved seed pairs and a half-octave away on 6 (bench/finder_rules.py).
0.3.7: multi-label models (a sigmoid per class, or logits declared ``multi-label-logits``)
maximise the label's log-odds instead of the single-label margin, and report each label's
own sigmoid as its probability (engine/_readout.py); single-label models are unchanged.
0.3.8: a class prototype's regularisers are weighed in its model's logit spread when that is
below one logit, and the convergence gate reads such a model at unit spread
(engine/_logit_scale.py): a strongly tempered model's prototypes were flattened by the
penalties and ran to the budget; models spreading a unit or more are optimised exactly as before.
0.3.9: on the CPU a chunk holds at most four 224-px RGB images' worth of input values per torch
thread (engine/_memory.py ``cpu_chunk_cap``): large inputs run in smaller chunks, faster per
image; the prototypes change by float rounding only (32-px models keep chunks of 32).
"""

SCORES_VERSION = 6
"""Bumped whenever the scores of the same prototype against the same reference set may
change (numbers or what they carry); keys the reference statistics (``scores.cache``) and,
for a job with a reference set, the result cache (``queue.cache``). Here, not in the engine,
so that the queue's key needs no torch.

2: significance, intervals, median summary, scored on the stored PNG.
3: reference-set caveats (``engine/_caveats.py``) kept with the statistics and carried by
every score they concern; the numbers are 2's.
4: the caveat ``NEAR_DUPLICATE_IMAGES`` (``engine/_near_duplicates.py``): statistics kept
under 3 would say nothing of views of one photo; the numbers are 3's.
5: ``NEAR_DUPLICATE_IMAGES`` finds more views (300 keypoints, low-contrast corners too: 84 %
of crop pairs that overlap by half or more, was 68 %) and no longer links aligned photos of
different subjects (faces) whose keypoints agree but pixels do not; the numbers are 4's.
6: ``NEAR_DUPLICATE_IMAGES`` fits its similarity by a vectorised RANSAC (every 2-match
hypothesis when there are at most 300, the best one's inliers refitted) instead of
scikit-image's loop: a pair that reaches the fit costs about a millisecond, not 20, and
its draws differ, so a borderline pair may settle otherwise (none did on the benchmark's
sets); the numbers are 5's.
"""
