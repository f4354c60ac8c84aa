from django.urls import path

from rooms import views

app_name = "rooms"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("rooms/", views.join, name="join"),
    path("rooms/<slug:slug>/", views.detail, name="detail"),
]
