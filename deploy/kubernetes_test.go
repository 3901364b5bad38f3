package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// manifests is what a folder's YAML files hold, each document decoded
// strictly (an unknown or misspelt field fails) into its API type.
type manifests struct {
	services    []*corev1.Service
	statefulSet []*appsv1.StatefulSet
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        map[string][]*autoscalingv2.HorizontalPodAutoscaler // by file
	configMaps  []*corev1.ConfigMap
}

func loadManifests(t *testing.T, dir string) *manifests {
	t.Helper()
	m := &manifests{hpas: map[string][]*autoscalingv2.HorizontalPodAutoscaler{}}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split("\n"+string(b), "\n---\n") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s, document %d: %v", f, i, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Service":
				s := &corev1.Service{}
				m.services, obj = append(m.services, s), s
			case "apps/v1 StatefulSet":
				s := &appsv1.StatefulSet{}
				m.statefulSet, obj = append(m.statefulSet, s), s
			case "policy/v1 PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				m.pdbs, obj = append(m.pdbs, p), p
			case "autoscaling/v2 HorizontalPodAutoscaler":
				h := &autoscalingv2.HorizontalPodAutoscaler{}
				m.hpas[filepath.Base(f)], obj = append(m.hpas[filepath.Base(f)], h), h
			case "v1 ConfigMap":
				c := &corev1.ConfigMap{}
				m.configMaps, obj = append(m.configMaps, c), c
			default:
				t.Fatalf("%s, document %d: unexpected %s %s", f, i, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s, document %d (%s): %v", f, i, tm.Kind, err)
			}
		}
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func envOf(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// TestKubernetes checks the manifests' invariants: a StatefulSet whose
// NATS routes name its own pods through a headless Service, a client
// Service without session affinity, the probes, a termination grace that
// fits the preStop pause and the drain, a disruption budget of one, and
// autoscalers on CPU and memory and on requests per second.
func TestKubernetes(t *testing.T) {
	t.Parallel()
	m := loadManifests(t, "kubernetes")
	if len(m.statefulSet) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(m.statefulSet))
	}
	sts := m.statefulSet[0]
	if sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector); err != nil || !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Fatalf("the StatefulSet's selector does not match its pods (%v)", err)
	}
	replicas := int(*sts.Spec.Replicas)
	if replicas < 3 {
		t.Errorf("%d replicas; the change log needs 3 for a majority that survives one loss", replicas)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: nodes wait for a majority of peers, so they must start together", sts.Spec.PodManagementPolicy)
	}

	var headless, client *corev1.Service
	for _, s := range m.services {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
			t.Errorf("Service %s selects no Fluxbase pod", s.Name)
		}
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			headless = s
		} else {
			client = s
		}
	}
	if headless == nil || headless.Name != sts.Spec.ServiceName {
		t.Fatalf("no headless Service named %q (the StatefulSet's serviceName)", sts.Spec.ServiceName)
	}
	if !headless.Spec.PublishNotReadyAddresses {
		t.Error("the headless Service must publish pods before they are ready: they are ready only once routed")
	}
	if client == nil {
		t.Fatal("no client Service")
	}
	if a := client.Spec.SessionAffinity; a != "" && a != corev1.ServiceAffinityNone {
		t.Errorf("the client Service has sessionAffinity %q: Fluxbase needs no stickiness", a)
	}

	c := sts.Spec.Template.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	routes, _ := envOf(c, "FLUXBASE_CLUSTER_ROUTES")
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("nats://%s-%d.%s:%d", sts.Name, i, headless.Name, ports["cluster"]))
	}
	if got := strings.Split(routes.Value, ","); !slices.Equal(got, want) {
		t.Errorf("routes %v, want the pods' stable names %v", got, want)
	}
	if e, _ := envOf(c, "FLUXBASE_NODE_NAME"); e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Error("FLUXBASE_NODE_NAME is not the pod's name")
	}
	for _, secret := range []string{"DATABASE_URL", "FLUXBASE_JWT_SECRET"} {
		if e, _ := envOf(c, secret); e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s does not come from a Secret", secret)
		}
	}
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.StrVal != "http" {
			t.Errorf("%s probe: want GET %s on the http port, have %+v", name, path, p)
		}
	}
	probe("readiness", c.ReadinessProbe, "/ready")
	probe("liveness", c.LivenessProbe, "/health")
	probe("startup", c.StartupProbe, "/health")
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet.Path == "/ready" {
		t.Error("liveness on /ready would restart nodes while the database is down")
	}

	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop pause before the drain")
	}
	envDuration := func(name string) time.Duration {
		e, ok := envOf(c, name)
		if !ok {
			t.Fatalf("%s is not set", name)
		}
		d, err := time.ParseDuration(e.Value)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	// The drain phase lasts the drain delay or the slot's release (at
	// most the replicator's 5 s for durability and 5 s to close), then
	// the requests in flight get the shutdown timeout.
	need := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second +
		max(envDuration("FLUXBASE_DRAIN_DELAY"), 10*time.Second) + envDuration("FLUXBASE_SHUTDOWN_TIMEOUT") + 5*time.Second
	if grace := time.Duration(*sts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace < need {
		t.Errorf("terminationGracePeriodSeconds %v is shorter than the preStop pause and the drain, %v", grace, need)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Error("no volume claim for the node's JetStream files")
	}

	if len(m.pdbs) != 1 || m.pdbs[0].Spec.MaxUnavailable == nil || m.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 {
		t.Fatal("want one PodDisruptionBudget with maxUnavailable 1")
	}
	if sel, err := metav1.LabelSelectorAsSelector(m.pdbs[0].Spec.Selector); err != nil || !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Error("the PodDisruptionBudget does not select the Fluxbase pods")
	}
	checkHPAs(t, m, sts)
}

// checkHPAs: fluxbase.yaml scales on CPU and memory, hpa-requests.yaml
// on those and requests per second through the Prometheus adapter's rule;
// the two share a name, so applying the second replaces the first (two
// autoscalers on one StatefulSet fight).
func checkHPAs(t *testing.T, m *manifests, sts *appsv1.StatefulSet) {
	t.Helper()
	base, requests := m.hpas["fluxbase.yaml"], m.hpas["hpa-requests.yaml"]
	if len(base) != 1 || len(requests) != 1 {
		t.Fatalf("want one autoscaler in each of fluxbase.yaml and hpa-requests.yaml, have %d and %d", len(base), len(requests))
	}
	if base[0].Name != requests[0].Name {
		t.Errorf("the autoscalers are named %q and %q: the second must replace the first", base[0].Name, requests[0].Name)
	}
	for file, h := range map[string]*autoscalingv2.HorizontalPodAutoscaler{"fluxbase.yaml": base[0], "hpa-requests.yaml": requests[0]} {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "StatefulSet" || ref.Name != sts.Name || ref.APIVersion != "apps/v1" {
			t.Errorf("%s: the autoscaler scales %+v, not the StatefulSet", file, ref)
		}
		if h.Spec.MinReplicas == nil || int(*h.Spec.MinReplicas) < int(*sts.Spec.Replicas) {
			t.Errorf("%s: minReplicas below the StatefulSet's %d", file, *sts.Spec.Replicas)
		}
		resources := map[corev1.ResourceName]bool{}
		pods := map[string]bool{}
		for _, mt := range h.Spec.Metrics {
			switch mt.Type {
			case autoscalingv2.ResourceMetricSourceType:
				resources[mt.Resource.Name] = mt.Resource.Target.AverageUtilization != nil
			case autoscalingv2.PodsMetricSourceType:
				pods[mt.Pods.Metric.Name] = true
			}
		}
		if !resources[corev1.ResourceCPU] || !resources[corev1.ResourceMemory] {
			t.Errorf("%s: the autoscaler does not scale on CPU and memory utilization", file)
		}
		if file == "hpa-requests.yaml" && !pods["http_requests_per_second"] {
			t.Errorf("%s: no Pods metric http_requests_per_second", file)
		}
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Error("utilization targets need CPU and memory requests")
	}

	// The adapter's rule that makes http_requests_per_second.
	if len(m.configMaps) != 1 {
		t.Fatalf("want the Prometheus adapter's ConfigMap, have %d ConfigMaps", len(m.configMaps))
	}
	var cfg struct {
		Rules []struct {
			SeriesQuery string `json:"seriesQuery"`
			Resources   struct {
				Overrides map[string]struct {
					Resource string `json:"resource"`
				} `json:"overrides"`
			} `json:"resources"`
			Name struct {
				Matches string `json:"matches"`
				As      string `json:"as"`
			} `json:"name"`
			MetricsQuery string `json:"metricsQuery"`
		} `json:"rules"`
	}
	if err := yaml.UnmarshalStrict([]byte(m.configMaps[0].Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("the adapter's config.yaml: %v", err)
	}
	found := false
	for _, r := range cfg.Rules {
		if r.Name.As == "http_requests_per_second" && strings.HasPrefix(r.SeriesQuery, "http_requests_total{") &&
			strings.Contains(r.MetricsQuery, "rate(<<.Series>>") && r.Resources.Overrides["pod"].Resource == "pod" {
			found = true
		}
	}
	if !found {
		t.Errorf("no adapter rule turns http_requests_total into http_requests_per_second per pod: %+v", cfg.Rules)
	}
}
