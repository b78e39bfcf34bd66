"""Fieldwork server: routed 311 cases in, geolocated field work out."""
