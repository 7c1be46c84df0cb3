"""Renders from files and arrays: the markdown/html report document, the demo and benchmark reports, attention
and example-slice figures. Nothing here trains or embeds."""
