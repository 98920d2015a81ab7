"""The REST API (Django REST framework): record conversions, watch and retry deliveries, and
hand over scan sessions from a storefront's JavaScript.

Include ``django_conversions.api.urls`` under a prefix of your choice; docs/api.md describes
every endpoint and docs/openapi.yaml is its OpenAPI schema.
"""
