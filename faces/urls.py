from django.urls import path

from faces import views

app_name = "faces"

urlpatterns = [
    path("faces/", views.index, name="index"),
    path("faces/detect/", views.detect, name="detect"),
    path("faces/stream/", views.new_stream, name="new-stream"),
]
