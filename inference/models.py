"""Inference records: prediction jobs, per-image and per-cluster predictions, ranking rounds.

A prediction is idempotent per (image, detector version, classifier version): running a job
again with the same promoted versions skips images already predicted. Each predicted cluster is
also a PredictionBox (label = the classifier's call, score = its probability), so the gallery,
the review page and Label Studio's pre-annotations show it like any other model box.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import UniqueConstraint

from cytoloop.models import Job


class PredictionJob(Job):
    """Predict a dataset's images (or a selection) with a detector and a classifier version.
    progress: done, total, predicted, skipped, pushed."""

    dataset = models.ForeignKey("annotation.Dataset", on_delete=models.CASCADE, related_name="prediction_jobs")
    image_ids = models.JSONField(null=True, blank=True, help_text="a selection; null = every image of the dataset")
    detector_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="+")
    classifier_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="+")
    push_to_label_studio = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"prediction job {self.pk} ({self.status})"


class ImagePrediction(models.Model):
    image = models.ForeignKey("annotation.Image", on_delete=models.CASCADE, related_name="model_predictions")
    job = models.ForeignKey(PredictionJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="images")
    detector_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="+")
    classifier_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=8, help_text="NILM when nothing is detected, else the highest grade")
    ls_prediction_id = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image", "-created_at"]
        constraints = [UniqueConstraint(fields=["image", "detector_version", "classifier_version"],
                                        name="one_prediction_per_image_and_model_versions")]

    def __str__(self) -> str:
        return f"{self.image} by {self.model_version}: {self.verdict}"

    @property
    def model_version(self) -> str:
        return f"{self.detector_version.name}+{self.classifier_version.name}"


class ClusterPrediction(models.Model):
    image_prediction = models.ForeignKey(ImagePrediction, on_delete=models.CASCADE, related_name="clusters")
    box = models.OneToOneField("annotation.PredictionBox", on_delete=models.CASCADE, related_name="detail")
    detector_score = models.FloatField()
    detector_class = models.CharField(max_length=8)
    probabilities = models.JSONField(help_text="the classifier's six class probabilities, Bethesda order")
    embedding = models.BinaryField(help_text="float32 pooled features of the classifier")

    class Meta:
        ordering = ["image_prediction", "-detector_score", "id"]

    def __str__(self) -> str:
        return f"cluster {self.pk} ({self.detector_class}, {self.detector_score:.2f})"

    def embedding_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.embedding), dtype=np.float32)


class RankingRound(models.Model):
    """An active-learning round: a strategy ranks a dataset's unreviewed images and clusters."""

    dataset = models.ForeignKey("annotation.Dataset", on_delete=models.CASCADE, related_name="ranking_rounds")
    strategy = models.CharField(max_length=40)
    k = models.PositiveIntegerField(help_text="how many images go to the experts' queues")
    diverse = models.BooleanField(default=False, help_text="k-center greedy on the embeddings among the top scores")
    allow_preannotations = models.BooleanField(default=False, help_text="show the model's boxes in the editor")
    detector_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="+")
    classifier_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="+")
    pool_size = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=True, help_text="the newest round of a dataset feeds its queue")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.dataset.name} round {self.pk} ({self.strategy}, k={self.k})"


class RankedImage(models.Model):
    round = models.ForeignKey(RankingRound, on_delete=models.CASCADE, related_name="ranked")
    image = models.ForeignKey("annotation.Image", on_delete=models.CASCADE, related_name="rankings")
    rank = models.PositiveIntegerField()
    score = models.FloatField()
    selected = models.BooleanField(default=False, help_text="among the k sent to the queues")
    reason = models.CharField(max_length=300)
    top_cluster = models.ForeignKey(ClusterPrediction, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    class Meta:
        ordering = ["round", "rank"]
        constraints = [UniqueConstraint(fields=["round", "image"], name="one_rank_per_image_per_round")]

    def __str__(self) -> str:
        return f"#{self.rank} image {self.image_id} ({self.score:.3f})"


class RankedCluster(models.Model):
    round = models.ForeignKey(RankingRound, on_delete=models.CASCADE, related_name="ranked_clusters")
    cluster = models.ForeignKey(ClusterPrediction, on_delete=models.CASCADE, related_name="rankings")
    rank = models.PositiveIntegerField()
    score = models.FloatField()

    class Meta:
        ordering = ["round", "rank"]
        constraints = [UniqueConstraint(fields=["round", "cluster"], name="one_rank_per_cluster_per_round")]

    def __str__(self) -> str:
        return f"#{self.rank} cluster {self.cluster_id} ({self.score:.3f})"
