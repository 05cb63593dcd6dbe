"""Monitoring that ships in the chart: scrape configuration, Grafana
dashboards and Prometheus alert rules, generated from code like the CRD
(`kubeinfer monitoring`, `make crds`); drift tests compare the files."""
