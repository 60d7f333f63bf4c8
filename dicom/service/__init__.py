"""The dermpacs DICOM node: receive, spool, group, route, run apps, send back, audit.

It knows DICOM and processes, not models: an app is a module run on an input folder
(``python -m apps.<name> -i IN -o OUT``); whatever DICOM files the app writes are sent.
"""
