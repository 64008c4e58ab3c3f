"""Figures, the HTML report and the Markdown summary, from the analysis tables only."""
