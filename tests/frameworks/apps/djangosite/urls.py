from __future__ import annotations

from django.contrib import admin
from django.urls import path

from djangosite import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("hello/", views.hello),
    path("feedback/", views.feedback),
    path("countdown/", views.countdown),
    path("ticker/", views.ticker),
    path("upload/", views.upload),
]
