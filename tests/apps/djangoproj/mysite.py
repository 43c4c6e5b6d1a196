"""A minimal real Django project in one module (settings, URLs and views)."""

import asyncio
import json

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

settings.configure(
    DEBUG=False,
    SECRET_KEY="ferricorn-test-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
)


def index(request):
    return HttpResponse("Hello from Django")


@csrf_exempt
def echo(request):
    if request.content_type == "application/json":
        return JsonResponse({"json": json.loads(request.body)})
    return JsonResponse({"form": request.POST.dict(), "method": request.method})


def item(request, item_id):
    return JsonResponse({"id": item_id, "path": request.path, "scheme": request.scheme})


async def nap(request):
    await asyncio.sleep(float(request.GET.get("s", "0.5")))
    return HttpResponse("async nap")


urlpatterns = [
    path("", index),
    path("nap/", nap),
    path("echo/", echo),
    path("items/<int:item_id>/", item),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

from django.core.asgi import get_asgi_application  # noqa: E402

asgi_application = get_asgi_application()
