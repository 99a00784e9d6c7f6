"""Training side (torch + open_clip): the GRMP model, meta-prompt pre-training, QGR fine-tuning, evaluation.

The method is ``docs/method.md``. Modules, from the bottom up:

* ``backbones`` - the open_clip configs GRMP runs on (``grmp-tiny`` included) and the model spec of each;
* ``bootstrap`` - ``grmp-tiny``'s offline weights, trained contrastively on synthetic distortions;
* ``pretrained`` - where a backbone's weights come from (tags, files, ``bootstrap``) and the backbone;
* ``model`` - the prompted model; ``checkpoint`` - its folder on disk;
* ``datasets``, ``distributed``, ``qgr`` - data, devices and ranks, the QGR update rule;
* ``meta`` and ``finetune`` - the two training stages; ``schedules`` - their per-backbone defaults;
* ``protocol`` - the few-shot splits; ``evaluate`` - scoring against human scores;
* ``run`` - one training run (:func:`~grmp_edge.train.run.run_plan`, what ``grmp-edge train`` calls),
  with ``runlog`` for its progress.
"""
