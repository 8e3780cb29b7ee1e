"""Streamlit glue shared by the pages: project selection, cached loading, image rendering.

Pages stay thin: they read and write through the package and keep no ML logic of their own.
"""
