"""Uploaded datasets: parsing, validation, seeded splits and their stored form."""
