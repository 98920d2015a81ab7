from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/conversions/", include("django_conversions.api.urls")),
    path("conversions/", include("django_conversions.urls")),
]
