package scheduler

import (
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// nodeCache is the scheduler's view of the nodes and of the pods bound to
// them, kept current by the informers' event handlers. A pod the scheduler
// has just bound is "assumed" on its node until the informer shows the
// binding, so that pods scheduled back to back see each other.
type nodeCache struct {
	mu    sync.Mutex
	nodes map[string]*nodeInfo
	// pods maps the key of every counted pod to where it is counted.
	pods map[string]cachedPod
}

type cachedPod struct {
	node    string
	assumed bool
}

func newCache() *nodeCache {
	return &nodeCache{nodes: map[string]*nodeInfo{}, pods: map[string]cachedPod{}}
}

// setNode adds or replaces a node.
func (c *nodeCache) setNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[node.Name]; ok {
		n.node = node
		return
	}
	c.nodes[node.Name] = newNodeInfo(node)
}

// removeNode forgets a node. Its pods stay counted, in case it comes back
// before they are gone.
func (c *nodeCache) removeNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return
	}
	if len(n.pods) == 0 {
		delete(c.nodes, name)
		return
	}
	n.node = nil
}

// setPod counts a pod bound to a node (spec.nodeName set), replacing what
// was counted for it, assumed or not. A finished pod is uncounted.
func (c *nodeCache) setPod(key string, pod *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return
	}
	c.addLocked(key, pod.Spec.NodeName, pod, false)
}

// removePod uncounts a pod and reports whether it was counted.
func (c *nodeCache) removePod(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removeLocked(key)
}

// assume counts pod on node before the informer shows it there. It does
// nothing if the pod is counted already.
func (c *nodeCache) assume(key string, pod *corev1.Pod, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pods[key]; ok {
		return
	}
	p := pod.DeepCopy()
	p.Spec.NodeName = node
	c.addLocked(key, node, p, true)
}

// forget uncounts an assumed pod whose binding failed.
func (c *nodeCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cp, ok := c.pods[key]; ok && cp.assumed {
		c.removeLocked(key)
	}
}

// has reports whether a pod is counted on a node, assumed or not.
func (c *nodeCache) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pods[key]
	return ok
}

func (c *nodeCache) addLocked(key, node string, pod *corev1.Pod, assumed bool) {
	n, ok := c.nodes[node]
	if !ok {
		n = newNodeInfo(nil)
		c.nodes[node] = n
	}
	n.add(key, newPodInfo(pod))
	c.pods[key] = cachedPod{node: node, assumed: assumed}
}

func (c *nodeCache) removeLocked(key string) bool {
	cp, ok := c.pods[key]
	if !ok {
		return false
	}
	delete(c.pods, key)
	if n, ok := c.nodes[cp.node]; ok {
		n.remove(key)
		if n.node == nil && len(n.pods) == 0 {
			delete(c.nodes, cp.node)
		}
	}
	return true
}

// place finds a node for pod: it filters every known node, scores those
// that fit and picks the best, at random among equals. If none fits, it
// returns the reasons.
func (c *nodeCache) place(pod *corev1.Pod, pick func(int) int) (string, *fitError) {
	info := newPodInfo(pod)
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.nodes))
	for name, n := range c.nodes {
		if n.node != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	fe := &fitError{nodes: len(names), reasons: map[string]int{}}
	var fit []*nodeInfo
	for _, name := range names {
		n := c.nodes[name]
		reasons := filter(info, n)
		if len(reasons) == 0 {
			fit = append(fit, n)
			continue
		}
		for _, r := range reasons {
			fe.reasons[r]++
		}
	}
	if len(fit) == 0 {
		return "", fe
	}
	return choose(info, fit, pick), nil
}
