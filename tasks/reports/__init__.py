"""Every report exitflow writes, on one trade-off maths module and one table helper.

- ``tradeoff``: Pareto fronts, interpolation at a speed-up, quality at a target on a dev-chosen
  front, AUC, mean and std over seeds, claims against a reference, rows at target speed-ups;
- ``tables``: the Markdown table builder and cell formatting;
- ``cells``: the comparison's typed cell summary and cell (the JSON of ``cell.json`` / ``compare.json``);
- ``targets``: the table and curves file of rows read at target speed-ups (Past-Future, LECO);
- renderers: ``spine`` (``build_report``), ``hashee``, ``consistentee`` (report and ablation),
  ``past_future``, ``leco``, ``generation``, ``learnability``, ``comparison`` (``exitflow compare``).
"""
