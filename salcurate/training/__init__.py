"""Stage 4, training: models learned from the store's proxies.

Takes the store's images, tags, proxy masks, scores and selections and gives trained models: the
tag classifier whose CAM proxies go back into the store as a proxy set (``pseudo-label``,
:mod:`.pseudo_label`, the paper's P1), the fine scorer (``train-scorer``, :mod:`.scorer`) and
SAL-Net (``retrain``, :mod:`.retrain`, Eq. 10-14).  All three are ``run(config, *, events=None)
-> Result`` over a config dataclass that declares every setting once; the mechanics they share
(precision, model set-up, checkpoints with a recipe check, JSONL log, Ctrl-C, DDP) are in
:mod:`.harness` and :mod:`salcurate.distributed`; :mod:`.data` and :mod:`.losses` are SAL-Net's data and
losses.
"""
