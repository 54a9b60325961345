"""diffusion-explorer: the app's frame. Each page is one file in app_pages/; add a page
with one line in PAGES.   Run: streamlit run app.py"""

import streamlit as st

from app_pages import chart, controls

st.set_page_config(layout="wide", page_title="diffusion-explorer")
chart.preload()  # the browser loads plotly.js while the page computes its first figure
controls.plugins()  # EXPLORER_PLUGINS and installed entry points register their solvers; failures show on every page

PAGES = [
    st.Page("app_pages/gallery.py", title="Gallery", icon=":material/photo_library:", url_path="gallery"),
    st.Page("app_pages/trajectories.py", title="Trajectories", icon=":material/timeline:", default=True),
    st.Page("app_pages/solver_lab.py", title="Solver lab", icon=":material/science:", url_path="solver-lab"),
    st.Page("app_pages/stability.py", title="Stability", icon=":material/blur_circular:", url_path="stability"),
    st.Page("app_pages/mode_interpolation.py", title="Mode interpolation", icon=":material/scatter_plot:", url_path="mode-interpolation"),
    st.Page("app_pages/images.py", title="Images", icon=":material/image:", url_path="images"),
    st.Page("app_pages/schedules.py", title="Schedules", icon=":material/schedule:", url_path="schedules"),
    st.Page("app_pages/audit.py", title="Scheduler audit", icon=":material/fact_check:", url_path="audit"),
    st.Page("app_pages/guidance.py", title="Guidance", icon=":material/explore:", url_path="guidance"),
    st.Page("app_pages/search.py", title="Solver search", icon=":material/manage_search:", url_path="search"),
    st.Page("app_pages/starts.py", title="Starts", icon=":material/start:", url_path="starts"),
    st.Page("app_pages/learned_fields.py", title="Learned fields", icon=":material/cyclone:", url_path="learned-fields"),
    st.Page("app_pages/few_steps.py", title="Few steps", icon=":material/fast_forward:", url_path="few-steps"),
]

st.navigation(PAGES).run()
