{{/* Chart name, at most 63 characters. */}}
{{- define "reprise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, plus the chart name unless already in it. */}}
{{- define "reprise.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "reprise.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "reprise.labels" -}}
helm.sh/chart: {{ include "reprise.chart" . }}
{{ include "reprise.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | toString | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: reprise
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the server pods; never change them in an upgrade. The
component keeps other workloads of the release (e.g. workers) out of the
Service and the PodDisruptionBudget.
*/}}
{{- define "reprise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reprise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "reprise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reprise.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "reprise.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* The Secret holding the database URL and auth keys: the user's, or the chart's. */}}
{{- define "reprise.secretName" -}}
{{- if .Values.existingSecret.name }}
{{- .Values.existingSecret.name }}
{{- else }}
{{- include "reprise.fullname" . }}
{{- end }}
{{- end }}

{{/*
Key names inside that Secret; empty when the value is not configured.
The chart's own Secret uses fixed names for whatever values are set.
*/}}
{{- define "reprise.databaseUrlKey" -}}
{{- if .Values.existingSecret.name }}
{{- required "existingSecret.databaseUrlKey must name the key holding the PostgreSQL URL" .Values.existingSecret.databaseUrlKey }}
{{- else }}
{{- "database-url" }}
{{- end }}
{{- end }}

{{- define "reprise.hs256SecretKey" -}}
{{- if .Values.existingSecret.name }}
{{- .Values.existingSecret.hs256SecretKey }}
{{- else if .Values.auth.hs256Secret }}
{{- "auth-hs256-secret" }}
{{- end }}
{{- end }}

{{- define "reprise.secretsKeyKey" -}}
{{- if .Values.existingSecret.name }}
{{- .Values.existingSecret.secretsKeyKey }}
{{- else if .Values.secrets.key }}
{{- "secrets-key" }}
{{- end }}
{{- end }}

{{- define "reprise.publicKeyKey" -}}
{{- if .Values.existingSecret.name }}
{{- .Values.existingSecret.publicKeyKey }}
{{- else if .Values.auth.publicKey }}
{{- "auth-public-key.pem" }}
{{- end }}
{{- end }}

{{- define "reprise.jwksKey" -}}
{{- if .Values.existingSecret.name }}
{{- .Values.existingSecret.jwksKey }}
{{- else if .Values.auth.jwks }}
{{- "auth-jwks.json" }}
{{- end }}
{{- end }}

{{/* "true" when some authentication is configured, else "". */}}
{{- define "reprise.authConfigured" -}}
{{- if or (include "reprise.hs256SecretKey" .) (include "reprise.publicKeyKey" .) (include "reprise.jwksKey" .) }}true{{- end }}
{{- end }}
