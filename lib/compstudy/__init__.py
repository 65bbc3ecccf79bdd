"""compstudy: the library behind the reproducible neural-network compression study.

The notebooks under ``notebooks/`` stay thin and call into this package: data suite
(:mod:`compstudy.data`), models and the upstream zoo (:mod:`compstudy.models`,
:mod:`compstudy.zoo`), training (:mod:`compstudy.train`), metrics
(:mod:`compstudy.metrics`), configuration (:mod:`compstudy.config`), the papermill
runner (:mod:`compstudy.runner`), plots (:mod:`compstudy.plots`) and the claims engine that
gives every claim an effect, a 95 % CI and a verdict (:mod:`compstudy.claims`).
"""

__version__ = "0.1.0"
