"""The clinician's calibration wizard (``bci calibrate``): a local web app, step by step."""
