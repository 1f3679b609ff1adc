"""Artifacts -> measurements -> verdict: devices, transports, runners, matrix, gate, reports."""
