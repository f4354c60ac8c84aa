from django import template

from streaming.services import list_streams

register = template.Library()


@register.inclusion_tag("streaming/_stream_list.html")
def stream_list(limit: int = 20):
    """The lobby's "Live streams" tab: live, waiting and recent ended streams."""
    return {"streams": list_streams(limit)}
