{{- define "trainpool.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "trainpool.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "trainpool.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trainpool.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "trainpool.jobsNamespace" -}}
{{ .Values.jobs.namespace | default .Release.Namespace }}
{{- end -}}

{{- define "trainpool.metricsSecret" -}}
{{ .Values.metrics.token.existingSecret | default (printf "%s-metrics-token" (include "trainpool.fullname" .)) }}
{{- end -}}

{{- define "trainpool.adminSecret" -}}
{{ .Values.adminToken.existingSecret | default (printf "%s-admin-token" (include "trainpool.fullname" .)) }}
{{- end -}}

{{- define "trainpool.checkpointClaim" -}}
{{- if .Values.checkpoints.existingClaim -}}
{{ .Values.checkpoints.existingClaim }}
{{- else if .Values.checkpoints.create -}}
{{ include "trainpool.fullname" . }}-checkpoints
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for the server. */}}
{{- define "trainpool.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The server mounts the checkpoint claim only where it can: in its own namespace. */}}
{{- define "trainpool.serverCheckpointClaim" -}}
{{- if eq (include "trainpool.jobsNamespace" .) .Release.Namespace -}}
{{ include "trainpool.checkpointClaim" . }}
{{- end -}}
{{- end -}}
