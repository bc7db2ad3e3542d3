"""Sphinx configuration of the enos site (``bash scripts/docs.sh`` builds it with -W)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

import enos  # noqa: E402

project = "enos"
author = "the enos developers"
copyright = "the enos developers, GPL-3.0-or-later"
version = release = enos.__version__

# myst_nb reads the Markdown pages (it brings myst_parser) and executes the notebook pages
# (tutorial.md, experiments.md: MyST text notebooks) in a real Jupyter kernel during the build
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "enosdocs"]
root_doc = "index"
exclude_patterns = ["_build", "_generated", "**/.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = []

# The notebook pages book `local` hosts (network namespaces): that needs root. As root
# (CI, scripts/docs.sh as root) they are executed at every build, and a failing cell fails
# the build; otherwise they are shown without outputs (scripts/docs.sh says so).
nb_execution_mode = "force" if os.geteuid() == 0 and not os.environ.get("ENOS_DOCS_NO_EXECUTE") else "off"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# offline: nothing fetched at build time, nothing fetched by the pages
html_theme = "furo"
html_title = f"enos {release}"
html_static_path = []
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {"navigation_with_keys": True}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
napoleon_google_docstring = False
