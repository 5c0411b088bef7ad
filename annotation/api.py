"""Annotation API. Blind by construction: every GET about an image asks annotation.access (the one
rule) what the user may see of it; an image the user may not open and a missing one both answer
404, and a list the rule hides is empty."""

from __future__ import annotations

import hmac
import json
import math

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import access, drafts, selectors, services
from annotation.bethesda import BETHESDA, UnknownLabel, normalize_label
from annotation.geometry import Box
from annotation.models import Cluster, ExpertAnnotation, Image, PredictionBox
from cytoloop.roles import HasRole, Role


class FiniteFloat(serializers.FloatField):
    def to_internal_value(self, data):
        try:
            value = float(data)
        except (TypeError, ValueError):
            self.fail("invalid")
        if not math.isfinite(value):
            raise serializers.ValidationError("must be a finite number (not NaN or infinity)")
        return value


class LabelField(serializers.CharField):
    """A Bethesda label; the usual spellings (case, "ascus") are accepted and made canonical."""

    def to_internal_value(self, data):
        try:
            return normalize_label(super().to_internal_value(data))
        except UnknownLabel as exc:
            raise serializers.ValidationError(str(exc)) from None


class BoxSerializer(serializers.Serializer):
    x = FiniteFloat()
    y = FiniteFloat()
    width = FiniteFloat()
    height = FiniteFloat()
    label = LabelField(help_text="one of " + ", ".join(BETHESDA))
    prediction = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="id of the model's box (pre-annotation) this box started from; omit for a drawn box")


class EditorBoxesSerializer(serializers.Serializer):
    """What an editor sends: boxes in pixels or Label Studio result items, and the revision it
    was opened on."""

    boxes = BoxSerializer(many=True, required=False, help_text="boxes in image pixels")
    result = serializers.ListField(
        child=serializers.DictField(), required=False,
        help_text="Label Studio result items (percent), as the embedded editor sends them; a region "
                  "id 'pred-N' says it started as the model's box N",
    )
    revision = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="the revision of your annotation the editor was opened on (0 or null: nothing submitted "
                  "yet); an older one than saved now is refused with 409",
    )

    def validate(self, attrs):
        if ("boxes" in attrs) == ("result" in attrs):
            raise serializers.ValidationError("send exactly one of 'boxes' (pixels) or 'result' (Label Studio)")
        return attrs

    def boxes_for(self, image) -> tuple[list[Box], list[int | None]]:
        """(boxes in pixels, the prediction id each started from); ValueError if malformed."""
        data = self.validated_data
        if "result" in data:
            return drafts.parse_result(data["result"], image.width, image.height)
        rows = data["boxes"]
        return ([Box(b["x"], b["y"], b["width"], b["height"], b["label"]) for b in rows],
                [b.get("prediction") for b in rows])


class SubmitSerializer(EditorBoxesSerializer):
    image = serializers.IntegerField(help_text="CytoLoop image id")
    no_findings = serializers.BooleanField(
        required=False, default=False,
        help_text="true: no abnormal cluster on this image (required to submit an empty box list)",
    )


def _stale_response(exc) -> Response:
    """409: the editor was opened on an older revision; what is saved now, for it to reload."""
    saved = exc.annotation
    body = {"detail": str(exc), "revision": exc.revision, "annotation": None, "result": []}
    if saved is not None:
        saved = ExpertAnnotation.objects.prefetch_related("boxes").select_related("image", "annotator").get(pk=saved.pk)
        body["revision"] = saved.revision
        body["detail"] = services.StaleAnnotation(annotation=saved, seen=exc.seen).args[0]
        body["annotation"] = AnnotationOutSerializer(saved).data
        body["result"] = drafts.editor_result(drafts.annotation_items(saved), saved.image.width, saved.image.height)
    return Response(body, status=status.HTTP_409_CONFLICT)


class AnnotationOutSerializer(serializers.ModelSerializer):
    boxes = serializers.SerializerMethodField()
    annotator = serializers.CharField(source="annotator.email")

    class Meta:
        model = ExpertAnnotation
        fields = ["id", "image", "annotator", "origin", "revision", "boxes", "created_at", "updated_at"]

    def get_boxes(self, obj) -> list[dict]:
        return [{"x": b.x, "y": b.y, "width": b.width, "height": b.height, "label": b.label}
                for b in obj.boxes.all()]


class AnnotationsView(APIView):
    """GET: your own annotations. POST: submit your boxes for an image assigned to you."""

    permission_classes = [HasRole.of(Role.PATHOLOGIST)]

    @extend_schema(responses=AnnotationOutSerializer(many=True))
    def get(self, request):
        qs = selectors.own_annotations(request.user)
        return Response(AnnotationOutSerializer(qs, many=True).data)

    @extend_schema(request=SubmitSerializer, responses={201: AnnotationOutSerializer, 409: OpenApiTypes.OBJECT})
    def post(self, request):
        data = SubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = Image.objects.filter(pk=data.validated_data["image"]).first()
        if image is None:
            return Response({"image": ["no such image"]}, status=status.HTTP_400_BAD_REQUEST)
        try:
            boxes, predictions = data.boxes_for(image)
            no_findings = data.validated_data["no_findings"]
            if not boxes and not no_findings:
                return Response({"no_findings": [
                    "no box was sent: to submit 'no abnormal cluster on this image', send \"no_findings\": true"]},
                    status=status.HTTP_400_BAD_REQUEST)
            if boxes and no_findings:
                return Response({"no_findings": [f"\"no_findings\": true, but {len(boxes)} boxes were sent"]},
                                status=status.HTTP_400_BAD_REQUEST)
            annotation = services.submit_annotation(
                image=image, annotator=request.user, boxes=boxes, predictions=predictions,
                base_revision=data.validated_data.get("revision"))
        except EDITOR_REFUSALS as exc:
            return _editor_refusal(exc)
        annotation = selectors.own_annotations(request.user).get(pk=annotation.pk)
        return Response(AnnotationOutSerializer(annotation).data, status=status.HTTP_201_CREATED)


#: what a save from the editor (submit or draft) can be refused with
EDITOR_REFUSALS = (services.NotAssigned, services.StaleAnnotation, ValueError)  # ValueError: AnnotationRejected too


def _editor_refusal(exc: Exception) -> Response:
    """The answer to a refused editor save: 403 not yours, 409 stale, 400 what is wrong."""
    if isinstance(exc, services.NotAssigned):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, services.StaleAnnotation):
        return _stale_response(exc)
    if isinstance(exc, services.AnnotationRejected):
        return Response({"boxes": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
    return Response({"result": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)  # malformed LS result


class DraftView(APIView):
    """PUT: keep your editor's unsaved work on an image assigned to you (autosave); restored when
    the editor opens again, removed by the submit. A draft from an out-of-date editor gets 409."""

    permission_classes = [HasRole.of(Role.PATHOLOGIST)]

    @extend_schema(request=EditorBoxesSerializer, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    def put(self, request, pk: int):
        image = Image.objects.filter(pk=pk).first()
        if image is None:
            return Response({"detail": "no such image"}, status=status.HTTP_404_NOT_FOUND)
        data = EditorBoxesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            boxes, predictions = data.boxes_for(image)
            draft = drafts.save_draft(image=image, annotator=request.user, boxes=boxes, predictions=predictions,
                                      base_revision=data.validated_data.get("revision"))
        except EDITOR_REFUSALS as exc:
            return _editor_refusal(exc)
        return Response({"image": image.pk, "boxes": len(draft.boxes), "base_revision": draft.base_revision or 0,
                         "saved_at": draft.updated_at})


class ImageAnnotationsView(APIView):
    """The annotations of one image that you may see (annotation.access: only yours while you
    have a vote pending on it or before its consensus)."""

    @extend_schema(responses=AnnotationOutSerializer(many=True))
    def get(self, request, pk: int):
        image, view = access.image_or_404(request.user, pk)
        return Response(AnnotationOutSerializer(access.annotations(request.user, view, image), many=True).data)


class PredictionOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = PredictionBox
        fields = ["id", "x", "y", "width", "height", "label", "score", "model_version"]


class ImagePredictionsView(APIView):
    """The model's boxes on one image that you may see (none while the rule hides them)."""

    @extend_schema(responses=PredictionOutSerializer(many=True))
    def get(self, request, pk: int):
        image, view = access.image_or_404(request.user, pk)
        return Response(PredictionOutSerializer(access.predictions(view, image), many=True).data)


class ClusterOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Cluster
        fields = ["id", "x", "y", "width", "height", "label", "status", "votes", "vote_share", "mean_iou",
                  "n_experts_found", "n_experts"]


class ImageConsensusView(APIView):
    """The image's consensus (its clusters and the current ground truth): 404 until it exists,
    and to anyone the rule keeps blind to it (the same answer)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    def get(self, request, pk: int):
        image, view = access.image_or_404(request.user, pk)
        if not view.consensus or image.consensus_at is None:
            raise Http404("no consensus for this image")
        truth = [{"x": b.x, "y": b.y, "width": b.width, "height": b.height, "label": b.label, "source": b.source}
                 for b in access.ground_truth(view, image)]
        return Response({"image": image.pk, "consensus_at": image.consensus_at,
                         "clusters": ClusterOutSerializer(access.clusters(view, image), many=True).data,
                         "ground_truth": truth})


class NextImageView(APIView):
    """Claim the next image of your queue (or get the one you hold)."""

    permission_classes = [HasRole.of(Role.PATHOLOGIST)]

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 204: None})
    def post(self, request):
        assignment = services.next_assignment(annotator=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"image": assignment.image_id, "expires_at": assignment.expires_at,
                         "progress": selectors.queue_progress(annotator=request.user)})


class SkipView(APIView):
    permission_classes = [HasRole.of(Role.PATHOLOGIST)]

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        image = get_object_or_404(Image, pk=pk)
        try:
            services.skip_assignment(image=image, annotator=request.user)
        except services.NotAssigned as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        return Response({"skipped": image.pk})


class LabelStudioWebhookView(APIView):
    """Label Studio's annotation events (ANNOTATION_CREATED/UPDATED, ANNOTATIONS_DELETED),
    authenticated by the shared secret in the X-CytoLoop-Secret header."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT,
                                                         403: OpenApiTypes.OBJECT})
    def post(self, request):
        secret = settings.LABEL_STUDIO_WEBHOOK_SECRET
        given = request.headers.get("X-CytoLoop-Secret", "")
        if not secret or not given or not hmac.compare_digest(given.encode(), secret.encode()):
            return Response({"detail": "missing or wrong X-CytoLoop-Secret header"}, status=status.HTTP_403_FORBIDDEN)
        try:
            payload = json.loads(request.body or b"null")
        except ValueError as exc:
            return Response({"detail": f"body is not JSON: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
        try:
            outcome = services.mirror_ls_event(payload)
        except services.WebhookPayloadError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"outcome": outcome})
