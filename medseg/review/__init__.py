"""Looking at a whole prediction batch: a static HTML report and a local review server.

:mod:`medseg.review.batch` reads an output folder of ``medseg predict`` (manifest,
``run.json``, masks, previews) into one record per case; :mod:`medseg.review.report`
renders them as a self-contained HTML page; :mod:`medseg.review.server` serves them
to a browser with NiiVue (bundled in ``static/``, never fetched) and records each
case's review in ``review.csv`` (:mod:`medseg.review.decisions`).
"""
