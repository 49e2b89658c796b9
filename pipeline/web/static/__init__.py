"""The live page: index.html, app.js and style.css (package data, served by pipeline/web/app.py)."""
