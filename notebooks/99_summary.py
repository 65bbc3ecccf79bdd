# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # All claims
#
# Every claim this study tests, across the four papers, as the runs of this profile decided
# them. A claim is **reproduced** when the 95 % confidence interval of its effect excludes zero
# on the paper's side, **contradicted** when it excludes zero on the other side or excludes
# the paper's own effect size, **inconclusive** when it covers zero (the note gives the
# smallest effect the run could have detected), and **not testable** at this scale when the
# note says why. A claim of "no difference" is reproduced only when its whole interval lies
# inside the stated margin. The tables are built from each run's `claims.csv`, and this page
# is rebuilt whenever one of them changes.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
digits = 1  # decimals of effects and intervals (rank correlations always show 2)
papers = {
    "01_hidden_cost": "Misra et al. 2023, the hidden cost of compression",
    "02_pruning_value": "Liu et al. 2019, rethinking the value of pruning",
    "03_sls": "Han & Tang 2024, SLS",
    "04_dcvit": "Zhang et al. 2024, DC-ViT",
}  # how the summary names the paper of each chapter

# %%
from IPython.display import Markdown, display
from myst_nb import glue

from compstudy.studies import summary

cfg = summary.Config.resolve(globals())
found = summary.collect(cfg)

# %% [markdown]
# ## Every paper, every claim

# %%
display(summary.summary_table(found, cfg, summary.OWN_ROOT))
glue("summary_table", summary.summary_table(found, cfg, summary.INTRO_ROOT), display=False)

# %% [markdown]
# ## The claims of each chapter
#
# With the paper's own evidence, the interval's method, and notes: the margin of an
# equivalence claim, the bound of a non-inferiority one ("no worse than"), the minimum
# detectable effect of an inconclusive one, the reason a claim is not testable.

# %%
for notebook in summary.notebooks_with_claims(found):
    display(Markdown(f"**{cfg.papers.get(notebook, notebook)}**"))
    display(summary.chapter_claims_table(found, cfg, notebook, summary.OWN_ROOT))
    glue(f"claims_{notebook}", summary.chapter_claims_table(found, cfg, notebook, summary.CHAPTER_ROOT),
         display=False)

# %% [markdown]
# ## What ran
#
# The scale each run states, and its wall time.

# %%
for notebook in found.scales:
    what_ran = summary.what_ran_html(found, notebook)
    display(Markdown(f"**{notebook}**"))
    display(what_ran)
    glue(f"what_ran_{notebook}", what_ran, display=False)
