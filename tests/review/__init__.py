"""Tests of the morning review: contact sheets, HTML reports, exports, schema, refine, query."""
