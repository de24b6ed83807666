"""Every report exitflow writes: the renderers and one table helper, on the trade-off
maths of ``models.tradeoff`` (pure: fronts, interpolation at a speed-up, quality at a target on a
dev-chosen front, AUC, mean and std over seeds, claims, rows at target speed-ups) and the figures
of ``tasks.plots`` (which the training and evaluation steps draw too, so it stays out of here: a
report edit must not retrain a model).

- ``tables``: the Markdown table builder and cell formatting;
- ``cells``: the comparison's typed cell summary and cell (the JSON of ``cell.json`` / ``compare.json``);
- ``targets``: the table and curves file of rows read at target speed-ups (Past-Future, LECO);
- renderers: ``default_run`` (``build_report``: the default run's comparison), ``hashee``,
  ``consistentee`` (report and ablation), ``past_future``, ``leco``, ``generation``, ``learnability``,
  ``comparison`` (``exitflow compare``);
- ``site``: the documentation's results pages (``docs/results/``), rendered from those reports' JSON
  and the committed benchmark files (``exitflow docs``, ``flows/docs.py``).
"""
