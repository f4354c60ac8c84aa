from django.urls import path

from identity import views

app_name = "identity"

urlpatterns = [
    path("me/name/", views.change_name, name="change-name"),
    path("me/token/", views.token, name="token"),
]
