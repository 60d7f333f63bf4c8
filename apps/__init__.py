"""dermpacs MONAI Deploy applications, one package per analysis."""

import os

# Native libraries read these when first imported: keep their start-up chatter out of the log.
os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
