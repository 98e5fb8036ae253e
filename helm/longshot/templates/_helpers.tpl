{{- define "longshot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "longshot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "longshot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "longshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: longshot
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* selectorLabels: (dict "ctx" $ "component" "worker") */}}
{{- define "longshot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "longshot.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "longshot.componentLabels" -}}
{{ include "longshot.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "longshot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "longshot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "longshot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "longshot.coordinator" -}}{{ include "longshot.fullname" . }}-coordinator{{- end }}
{{- define "longshot.workers" -}}{{ include "longshot.fullname" . }}-workers{{- end }}
{{- define "longshot.etcd" -}}{{ include "longshot.fullname" . }}-etcd{{- end }}

{{- define "longshot.coordinatorURL" -}}
{{- printf "%s://%s.%s.svc.%s:%d" (include "longshot.scheme" .) (include "longshot.coordinator" .) .Release.Namespace .Values.clusterDomain (int .Values.coordinator.port) }}
{{- end }}

{{- define "longshot.scheme" -}}{{ if .Values.tls.enabled }}https{{ else }}http{{ end }}{{- end }}

{{/* The Secret with ca.crt, tls.crt and tls.key. */}}
{{- define "longshot.tlsSecret" -}}{{ default (printf "%s-tls" (include "longshot.fullname" .)) .Values.tls.existingSecret }}{{- end }}

{{/* A member's TLS flags: the mounted Secret, or --insecure. */}}
{{- define "longshot.tlsArgs" -}}
{{- if .Values.tls.enabled }}
- --ca=/etc/longshot/tls/ca.crt
- --cert=/etc/longshot/tls/tls.crt
- --key=/etc/longshot/tls/tls.key
{{- else }}
- --insecure
{{- end }}
{{- end }}

{{- define "longshot.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/longshot/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "longshot.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "longshot.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* etcd's client URLs, comma-separated ("" with etcd.mode none). */}}
{{- define "longshot.etcdEndpoints" -}}
{{- if eq .Values.etcd.mode "external" }}
{{- if not .Values.etcd.external.endpoints }}{{ fail "etcd.mode is external: set etcd.external.endpoints" }}{{ end }}
{{- join "," .Values.etcd.external.endpoints }}
{{- else if eq .Values.etcd.mode "inChart" }}
{{- $urls := list }}
{{- $etcd := include "longshot.etcd" . }}
{{- range $i := until (int .Values.etcd.inChart.replicas) }}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc.%s:2379" $etcd $i $etcd $.Release.Namespace $.Values.clusterDomain) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}

{{/* The pod security context every pod of the chart gets. */}}
{{- define "longshot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "longshot.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{- define "longshot.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
