"""Operator commands beside the daemon: replay a recorded video through the station, collect training crops
through the same front end, listen as the reference subscriber."""
