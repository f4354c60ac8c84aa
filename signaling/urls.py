from django.urls import path

from signaling import views

app_name = "signaling"

urlpatterns = [
    path("recordings/<int:pk>/", views.recording_file, name="recording-file"),
]
