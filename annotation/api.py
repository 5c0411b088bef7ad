"""Annotation API. Blind by construction: an expert reads only their own annotations until the
image's consensus exists; every list goes through selectors.visible_annotations."""

from __future__ import annotations

import hmac
import json
import math

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.bethesda import BETHESDA
from annotation.geometry import Box
from annotation.models import ExpertAnnotation, Image
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
        from annotation.bethesda import UnknownLabel, normalize_label

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


class SubmitSerializer(serializers.Serializer):
    image = serializers.IntegerField(help_text="CytoLoop image id")
    boxes = BoxSerializer(many=True, required=False, help_text="boxes in image pixels")
    result = serializers.ListField(
        child=serializers.DictField(), required=False,
        help_text="Label Studio result items (percent), as the embedded editor sends them",
    )

    def validate(self, attrs):
        if ("boxes" in attrs) == ("result" in attrs):
            raise serializers.ValidationError("send exactly one of 'boxes' (pixels) or 'result' (Label Studio)")
        return attrs


class AnnotationOutSerializer(serializers.ModelSerializer):
    boxes = serializers.SerializerMethodField()
    annotator = serializers.CharField(source="annotator.email")

    class Meta:
        model = ExpertAnnotation
        fields = ["id", "image", "annotator", "origin", "boxes", "created_at", "updated_at"]

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

    @extend_schema(request=SubmitSerializer, responses={201: AnnotationOutSerializer})
    def post(self, request):
        data = SubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = Image.objects.filter(pk=data.validated_data["image"]).first()
        if image is None:
            return Response({"image": ["no such image"]}, status=status.HTTP_400_BAD_REQUEST)
        try:
            if "result" in data.validated_data:
                from annotation.labelstudio import result_to_boxes

                boxes = result_to_boxes(data.validated_data["result"], image.width, image.height)
            else:
                boxes = [Box(**b) for b in data.validated_data["boxes"]]
            annotation = services.submit_annotation(image=image, annotator=request.user, boxes=boxes)
        except services.NotAssigned as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        except services.AnnotationRejected as exc:
            return Response({"boxes": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        except ValueError as exc:  # malformed Label Studio result
            return Response({"result": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        annotation = selectors.own_annotations(request.user).get(pk=annotation.pk)
        return Response(AnnotationOutSerializer(annotation).data, status=status.HTTP_201_CREATED)


class ImageAnnotationsView(APIView):
    """The annotations of one image that you may see (only yours before consensus)."""

    @extend_schema(responses=AnnotationOutSerializer(many=True))
    def get(self, request, pk: int):
        image = get_object_or_404(Image, pk=pk)
        return Response(AnnotationOutSerializer(selectors.visible_annotations(request.user, image), many=True).data)


class NextImageView(APIView):
    """Claim the next image of your queue (or get the one you hold)."""

    permission_classes = [HasRole.of(Role.PATHOLOGIST)]

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 204: None})
    def post(self, request):
        assignment = services.next_assignment(annotator=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"image": assignment.image_id, "expires_at": assignment.expires_at,
                         "progress": services.queue_progress(annotator=request.user)})


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
