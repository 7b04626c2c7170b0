"""Figures and pages that show what a fit or a classification did."""
