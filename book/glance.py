# %% [markdown]
# # Results at a glance
#
# Every chapter's headline numbers in one place: this run's rows (highlighted) above the paper's
# {cite}`selvaraju2017gradcam` and the KTH reproduction's, as each chapter shows them beside its
# protocol. Each table is the one its chapter saved when it ran (under
# `results/<profile>/headlines/`); read the chapter for the protocol, the intervals' meaning and the
# claims that the numbers support. In the `default` profile the models and data differ from the
# paper's (EfficientNet-Lite on generated composites, an MNIST network, a generated X-ray stand-in),
# so the published rows are there for orientation, not for comparison; the `full` profile runs the
# paper's settings.

# %% tags=["parameters", "remove-cell"]
# Parameters (papermill overrides these; see book/params/<profile>/glance.yaml)
profile = "default"
results_dir = "../results"

# %% tags=["injected-parameters", "hide-input"]
# Parameters
profile = "default"


# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown, display

from gradcam_lib.report import Table
from gradcam_lib.report.summary import read_headlines
from gradcam_lib.runner import Book

chapters = [page.stem for page in Book().chapters() if page.stem[:2].isdigit()]
for chapter, title, table in read_headlines(results_dir, profile, chapters):
    display(Markdown(f"**[{chapter[3:].replace('_', ' ').capitalize()}]({chapter}.html)**: {title}"))
    for source, rows in ([] if table is None else table.groupby("source", sort=False)):
        display(Table(rows.drop(columns="source").dropna(axis=1, how="all").round(3), caption=source, index=False))
