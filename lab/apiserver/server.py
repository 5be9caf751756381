"""HTTP glue of the lab API server (aiohttp): authentication, routing to the verbs,
content negotiation (JSON, and Tables for `kubectl get`), and watch streams."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from lab.apiserver import resources as res
from lab.apiserver import status as st
from lab.apiserver.handlers import Api, matcher
from lab.apiserver.openapi import (
    openapi_v2,
    openapi_v2_protobuf,
    openapi_v3_group,
    openapi_v3_index,
)
from lab.apiserver.routing import Discovery, Target, parse_path
from lab.apiserver.service_registry import ServiceRegistry
from lab.apiserver.store import Event, Store
from lab.apiserver.tables import to_table
from lab.apiserver.watch import bookmark, translate, watch_event

log = logging.getLogger("picket.lab.apiserver")

UNAUTHENTICATED_PATHS = ("/version", "/healthz", "/livez", "/readyz")


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


NAMESPACE_GRACE = 0.5  # seconds a deleted namespace stays Terminating


def _after_grace(work: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_later(NAMESPACE_GRACE, work)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _table(
    resource: str, items: list[dict[str, Any]], request: web.Request, rv: int
) -> web.Response:
    try:
        return _json(
            to_table(
                resource,
                items,
                request.query.get("includeObject", "Metadata"),
                list_meta={"resourceVersion": str(rv)},
            )
        )
    except ValueError as exc:
        raise st.bad_request(str(exc)) from None


class ApiServer:
    def __init__(
        self,
        store: Store,
        token: str,
        server_address: str,
        bookmark_interval: float = 2.0,
        strict: bool = True,
        services: ServiceRegistry | None = None,
    ) -> None:
        self.store = store
        self.api = Api(store, defer=_after_grace, strict=strict, services=services)
        self.token = token
        self.server_address = server_address
        self.bookmark_interval = bookmark_interval

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors, self._authenticate], client_max_size=64 * 1024 * 1024
        )
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except st.ApiError as exc:
            return _json(exc.status(), exc.code)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in UNAUTHENTICATED_PATHS:
            # The scheme is case-insensitive, as kube-apiserver reads it: the Python
            # client's in-cluster configuration sends "bearer".
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
                raise st.unauthorized()
        return await handler(request)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/version":
            return _json(res.VERSION_INFO)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path.startswith("/openapi/"):
            return self._openapi(path, request.headers.get("Accept", ""))
        target = parse_path(path)
        if isinstance(target, Discovery):
            return self._discovery(target)
        return await self._resource(request, target)

    def _openapi(self, path: str, accept: str) -> web.Response:
        if path == "/openapi/v2":
            if "protobuf" in accept:
                return web.Response(
                    body=openapi_v2_protobuf(),
                    content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )
            return _json(openapi_v2())
        if path == "/openapi/v3":
            return _json(openapi_v3_index())
        doc = openapi_v3_group(path.removeprefix("/openapi/v3/"))
        if doc is None:
            raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    def _discovery(self, target: Discovery) -> web.Response:
        if target.root == "api" and target.version is None:
            return _json(res.api_versions(self.server_address))
        if target.root == "apis" and target.group is None:
            return _json(res.api_group_list())
        if target.version is None:
            doc = res.api_group(target.group or "")
        else:
            doc = res.api_resource_list(target.group or "", target.version)
        if doc is None:
            raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        params = request.query
        method = request.method
        dry_run = "dryRun" in params
        if target.name is None:
            if method == "GET":
                if target.legacy_watch or _truthy(params.get("watch")):
                    return await self._watch(request, target, params)
                return self._list(request, target, params)
            if method == "POST":
                return _json(self.api.create(target, await self._body(request), dry_run), 201)
            if method == "DELETE":
                deleted = self.api.delete_collection(target, params)
                return _json(self._list_doc(target, deleted))
            raise st.method_not_allowed()
        if target.subresource == "binding":
            if method != "POST":
                raise st.method_not_allowed()
            return _json(self.api.bind(target, await self._body(request)), 201)
        if target.subresource == "scale":
            return await self._scale(request, target, dry_run)
        if method == "GET":
            return self._one(request, target, self.api.get(target))
        if method == "PUT":
            return _json(self.api.update(target, await self._body(request), dry_run))
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            obj = self.api.patch(target, await request.read(), content_type, dry_run)
            return _json(obj)
        if method == "DELETE":
            return _json(self.api.delete(target, dry_run))
        raise st.method_not_allowed()

    async def _scale(self, request: web.Request, target: Target, dry_run: bool) -> web.Response:
        """The scale subresource (`kubectl scale`): an autoscaling/v1 Scale view."""
        if request.method == "GET":
            return _json(self.api.get_scale(target))
        if request.method == "PUT":
            body = await self._body(request)
        elif request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            body = self.api.patched_scale(target, await request.read(), content_type)
        else:
            raise st.method_not_allowed()
        return _json(self.api.set_scale(target, body, dry_run))

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise st.bad_request(f"the body of the request is not valid JSON: {exc}") from None

    def _list_doc(self, target: Target, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{target.resource.kind}List",
            "apiVersion": target.resource.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    def _list(
        self, request: web.Request, target: Target, params: Mapping[str, str]
    ) -> web.Response:
        items, rv = self.api.list(target, params)
        if wants_table(request):
            return _table(target.resource.plural, items, request, rv)
        return _json(self._list_doc(target, items))

    def _one(self, request: web.Request, target: Target, obj: dict[str, Any]) -> web.Response:
        if wants_table(request):
            rv = int(obj["metadata"].get("resourceVersion", self.store.rv))
            return _table(target.resource.plural, [obj], request, rv)
        return _json(obj)

    async def _watch(
        self, request: web.Request, target: Target, params: Mapping[str, str]
    ) -> web.StreamResponse:
        stream = WatchStream(self, request, target, params)
        return await stream.run()


class WatchStream:
    """One watch: initial events, then changes as they happen, bookmarks when idle."""

    def __init__(
        self, server: ApiServer, request: web.Request, target: Target, params: Mapping[str, str]
    ) -> None:
        self.server = server
        self.request = request
        self.target = target
        self.matches = matcher(target, params)
        self.params = params
        self.bookmarks = _truthy(params.get("allowWatchBookmarks"))
        timeout = params.get("timeoutSeconds")
        self.timeout = float(timeout) if timeout and timeout.isdigit() else 1800.0
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.response = web.StreamResponse(headers={"Content-Type": "application/json"})
        self.response.enable_chunked_encoding()

    async def send(self, doc: dict[str, Any]) -> None:
        await self.response.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    def _initial(self) -> list[tuple[str, dict[str, Any]]] | None:
        """The events that come before live ones; None when the start is compacted away."""
        store = self.server.store
        rv = self.params.get("resourceVersion", "")
        initial_events = _truthy(self.params.get("sendInitialEvents"))
        if rv in ("", "0") or initial_events:
            return [
                ("ADDED", o)
                for o in store.items(self.target.resource.key, self.target.namespace)
                if self.matches(o)
            ]
        if not rv.isdigit():
            raise st.bad_request(f"invalid resource version: {rv!r}")
        events = store.events_since(int(rv))
        if events is None:
            return None
        found = (
            translate(e, self.target.resource.key, self.target.namespace, self.matches)
            for e in events
        )
        return [f for f in found if f is not None]

    async def run(self) -> web.StreamResponse:
        initial = self._initial()
        # Subscribing right after the snapshot, with no await between, loses no event.
        unsubscribe = self.server.store.subscribe(self.queue.put_nowait)
        try:
            await self.response.prepare(self.request)
            if initial is None:
                expired = st.gone(
                    f"too old resource version: {self.params.get('resourceVersion')}"
                    f" ({self.server.store.compacted_rv})"
                )
                await self.send({"type": "ERROR", "object": expired.status()})
                return self.response
            for kind, obj in initial:
                await self.send(watch_event(kind, obj))
            if _truthy(self.params.get("sendInitialEvents")):
                await self._bookmark({"k8s.io/initial-events-end": "true"})
            await self._follow()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            unsubscribe()
        with contextlib.suppress(ConnectionResetError):
            await self.response.write_eof()
        return self.response

    async def _bookmark(self, annotations: dict[str, str] | None = None) -> None:
        resource = self.target.resource
        await self.send(
            bookmark(resource.kind, resource.api_version, self.server.store.rv, annotations)
        )

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(
                    self.queue.get(), min(remaining, self.server.bookmark_interval)
                )
            except TimeoutError:
                # Idle and every committed event delivered: a bookmark is safe to resume from.
                if self.bookmarks and self.queue.empty():
                    await self._bookmark()
                continue
            found = translate(event, self.target.resource.key, self.target.namespace, self.matches)
            if found is not None:
                await self.send(watch_event(*found))
        if self.bookmarks and self.queue.empty():
            await self._bookmark()
