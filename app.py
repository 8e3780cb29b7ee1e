"""spuraudit's web app: `streamlit run app.py` (or `spuraudit app`)."""

import streamlit as st

st.set_page_config(page_title="spuraudit", page_icon="🔎", layout="wide")

pages = {
    "Audit": [
        st.Page("pages/home.py", title="Home", icon="🏠", default=True),
        st.Page("pages/features.py", title="Features", icon="🔎"),
        st.Page("pages/rankings.py", title="Rankings & gaps", icon="📊"),
    ],
}
st.navigation(pages).run()
